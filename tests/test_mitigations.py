import random

from collapse_ray.config import MitigationConfig
from collapse_ray.datatypes import Example
from collapse_ray.mitigations import apply_mitigations
from collapse_ray.tasks.codegen import CodeGeneration

PROMPT = 'def f(x):\n    """Double x."""\n'


def syn(body, i=0):
    return Example(PROMPT, body, "synthetic", 0, {"i": i})


def test_quality_filter_drops_code_that_does_not_parse():
    examples = [syn("    return 2 * x\n"), syn("    return 2 *\n"), syn("")]
    kept, removed = apply_mitigations(examples, CodeGeneration(), MitigationConfig(quality_filter=True), 10,
                                      random.Random(0))
    assert [e.completion for e in kept] == ["    return 2 * x\n"] and removed == {"quality_filter": 2}


def test_exact_dedup_ignores_whitespace_differences():
    examples = [syn("    return 2 * x\n"), syn("    return  2 * x\n"), syn("    return x + x\n")]
    kept, removed = apply_mitigations(examples, CodeGeneration(), MitigationConfig(dedup="exact"), 10,
                                      random.Random(0))
    assert len(kept) == 2 and removed == {"dedup": 1}


def test_minhash_drops_near_duplicates_and_keeps_distinct_code():
    long_body = "    total = 0\n" + "".join(f"    total += x * {i}\n" for i in range(30)) + "    return total\n"
    near = long_body.replace("* 29", "* 31")
    other = "    words = str(x).split()\n    return sorted(set(words), key=len)\n"
    kept, removed = apply_mitigations([syn(long_body), syn(near), syn(other)], CodeGeneration(),
                                      MitigationConfig(dedup="minhash", minhash_threshold=0.8), 10,
                                      random.Random(0))
    assert [e.completion for e in kept] == [long_body, other] and removed == {"dedup": 1}


def test_minhash_on_pseudo_labels_compares_the_code_not_the_label_word():
    """Vulnerability's completions are one of two label words: every example shares its label's
    word, so the code is what tells duplicates apart."""
    from collapse_ray.tasks.vulnerability import VulnerabilityDetection

    def labelled(code):
        return Example(f"{code}\nVulnerable?", " no", "synthetic", 1, {"pseudo_label": 0, "confidence": 0.9})

    functions = [
        "int area(int w, int h) {\n    if (w < 0 || h < 0)\n        return -1;\n    return w * h;\n}",
        "void copy_name(char *dst, const char *src) {\n    strcpy(dst, src);\n    dst[0] = toupper(dst[0]);\n}",
        "static int parse_header(const unsigned char *p, size_t len, struct header *h) {\n"
        "    if (len < HEADER_SIZE)\n        return -EINVAL;\n    h->version = p[0] >> 4;\n"
        "    h->flags = p[0] & 0x0f;\n    h->length = (p[1] << 8) | p[2];\n    h->checksum = p[3];\n"
        "    if (h->length > len - HEADER_SIZE)\n        return -EOVERFLOW;\n    return 0;\n}",
        "bool frame_fits(struct frame *f, size_t cap) {\n    return f->header_len + f->payload_len <= cap;\n}",
    ]
    distinct = [labelled(code) for code in functions]
    copied = labelled(functions[2].replace("h->checksum = p[3];", "h->checksum = p[4];"))
    kept, removed = apply_mitigations(distinct + [copied], VulnerabilityDetection(),
                                      MitigationConfig(dedup="minhash", minhash_threshold=0.8), 10,
                                      random.Random(0))
    assert kept == distinct and removed == {"dedup": 1}


def test_oversampled_outputs_are_selected_down_to_the_pool_size():
    examples = [syn(f"    return {i}\n", i) for i in range(30)]
    kept, removed = apply_mitigations(examples, CodeGeneration(), MitigationConfig(oversample=3.0), 10,
                                      random.Random(0))
    assert len(kept) == 10 and removed == {"selection": 20}


def test_execution_filter_keeps_the_completions_that_pass_their_pool_prompts_tests_in_the_sandbox():
    """The model's own answers to pool prompts: the canonical body passes, a wrong one and one that
    raises fail; the filter runs the pool problem's own tests (carried in the pool example)."""
    from collapse_ray.config import SizesConfig
    from collapse_ray.tasks import get_task

    task = get_task("codegen_embedded")
    pool = task.load(None, 0, SizesConfig(train_examples=8, synthetic_pool=3, eval_examples=8)).pool
    answers = [pool[0].completion, "\n    return None\n", "\n    raise SystemExit(0)\n"]
    synthetic = [ex.as_synthetic(answer, 1) for ex, answer in zip(pool, answers)]
    kept, removed = apply_mitigations(synthetic, task, MitigationConfig(execution_filter=True), 10, random.Random(0))
    assert kept == synthetic[:1] and removed == {"execution_filter": 2}
