"""The LLM prompt of a patient (leader/prompts.py) on a hand-made patient."""

from __future__ import annotations

import pytest

from medrec_bench.llm.prompts import PromptConfig, answer_text, build_prompt, count_tokens, drug_names, fit_prompt
from medrec_bench.data.schema import Visit, Vocabularies, Vocabulary
from medrec_bench.tasks.protocols import Sample


@pytest.fixture()
def vocab() -> Vocabularies:
    diagnoses = Vocabulary(("dx9:25000", "dx9:4019", "dx9:486"),
                           ("Diabetes mellitus without mention of complication", "Unspecified essential hypertension",
                            "Pneumonia, organism unspecified"))
    procedures = Vocabulary(("px9:3893", "px9:9604"),
                            ("Venous catheterization, not elsewhere classified", "Insertion of endotracheal tube"))
    drugs = Vocabulary(("A10A", "C07A", "J01D"),
                       ("INSULINS AND ANALOGUES", "BETA BLOCKING AGENTS", "OTHER BETA-LACTAM ANTIBACTERIALS"))
    profile = {"gender": Vocabulary(("F", "M"), ("F", "M")), "age_group": Vocabulary(("45-64",), ("45-64",))}
    return Vocabularies(diagnoses, procedures, drugs, profile)


def _visit(vid: str, dx: tuple[int, ...], px: tuple[int, ...], drugs: tuple[int, ...]) -> Visit:
    return Visit(vid, None, dx, px, drugs, {})


@pytest.fixture()
def sample() -> Sample:
    history = (_visit("v1", (1,), (), (1,)), _visit("v2", (0,), (0,), (0, 1)))
    return Sample("p1", "v3", history, (2, 1), (1,), {"gender": 0, "age_group": 0}, (0, 2))


EXPECTED = (
    "The patient has 2 previous hospital visits.\n"
    "Visit 1: diagnoses were unspecified essential hypertension; procedures were none; "
    "prescribed drug classes were beta blocking agents.\n"
    "Visit 2: diagnoses were diabetes mellitus without mention of complication; "
    "procedures were venous catheterization, not elsewhere classified; "
    "prescribed drug classes were insulins and analogues, beta blocking agents.\n"
    "Current visit: diagnoses are pneumonia, organism unspecified, unspecified essential hypertension; "
    "procedures are insertion of endotracheal tube.\n"
    "The drug classes to prescribe for the current visit are:"
)


class WordTokenizer:
    """One token per whitespace-separated word, plus a BOS (like a Llama tokenizer adds)."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [0] * len(text.split())
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


def test_exact_prompt(sample, vocab):
    assert build_prompt(sample, vocab) == EXPECTED


def test_profile_sentence_and_history_cap(sample, vocab):
    text = build_prompt(sample, vocab, PromptConfig(max_history=1, include_profile=True))
    lines = text.split("\n")
    assert lines[0] == "Patient profile: gender f, age group 45-64."
    assert lines[1] == "The patient has 2 previous hospital visits; the most recent one is described below."
    assert lines[2].startswith("Visit 2: diagnoses were diabetes mellitus")
    assert "Visit 1:" not in text
    assert lines[-2:] == EXPECTED.split("\n")[-2:]
    assert "Patient profile" not in build_prompt(sample, vocab)  # off by default


def test_first_visit_and_zero_history(sample, vocab):
    first = Sample("p2", "w1", (), (0,), (), {}, (0,))
    assert build_prompt(first, vocab) == (
        "The patient has no previous hospital visit.\n"
        "Current visit: diagnoses are diabetes mellitus without mention of complication; procedures are none.\n"
        "The drug classes to prescribe for the current visit are:")
    text = build_prompt(sample, vocab, n_history=0)
    assert text.startswith("The patient has 2 previous hospital visits; none is described below.\nCurrent visit:")


def test_history_visits_show_their_own_codes(vocab):
    # three earlier visits, each with a distinct diagnosis and drug; the current visit has yet another diagnosis
    history = tuple(_visit(f"v{i}", (i,), (), (i,)) for i in range(3))
    sample = Sample("p", "v3", history, (2,), (), {}, ())
    lines = build_prompt(sample, vocab).split("\n")
    for i in range(3):
        line = lines[1 + i]
        assert line.startswith(f"Visit {i + 1}: diagnoses were {vocab.diagnoses.names[i].lower()};")
        assert line.endswith(f"prescribed drug classes were {vocab.drugs.names[i].lower()}.")


def test_neutral_wording(sample, vocab):
    text = build_prompt(sample, vocab, PromptConfig(include_profile=True)).lower()
    for word in ("he", "she", "his", "her", "him"):
        assert f" {word} " not in f" {text.replace(',', ' ').replace('.', ' ')} "
    assert "the patient" in text


def test_max_history_keeps_most_recent_with_absolute_numbers(vocab):
    history = tuple(_visit(f"v{i}", (i % 3,), (), ()) for i in range(5))
    sample = Sample("p", "v5", history, (0,), (), {}, ())
    text = build_prompt(sample, vocab)  # default max_history=3
    assert "The patient has 5 previous hospital visits; the 3 most recent are described below." in text
    assert [line.split(":")[0] for line in text.split("\n") if line.startswith("Visit ")] == \
           ["Visit 3", "Visit 4", "Visit 5"]


def test_truncation_drops_oldest_history_first(sample, vocab):
    tok = WordTokenizer()
    full = build_prompt(sample, vocab)
    n_full = count_tokens(full, tok)
    assert fit_prompt(sample, vocab, tok, PromptConfig(max_length=n_full + 1)) == full  # +1: the EOS reserve
    one_less = fit_prompt(sample, vocab, tok, PromptConfig(max_length=n_full))
    assert "Visit 1:" not in one_less and "Visit 2:" in one_less
    assert count_tokens(one_less, tok) + 1 <= n_full
    assert one_less.endswith(EXPECTED.split("\n", 3)[-1])  # the current visit is intact
    none_left = fit_prompt(sample, vocab, tok, PromptConfig(max_length=count_tokens(build_prompt(
        sample, vocab, n_history=0), tok) + 1))
    assert "Visit " not in none_left and "Current visit: diagnoses are pneumonia" in none_left


def test_truncation_never_drops_the_current_visit(sample, vocab):
    tok = WordTokenizer()
    bare = build_prompt(sample, vocab, n_history=0)
    text = fit_prompt(sample, vocab, tok, PromptConfig(max_length=count_tokens(bare, tok) - 2))
    # the code lists are cut from the end, the sentences stay
    assert "Current visit: diagnoses are " in text and "; procedures are " in text
    assert text.endswith("The drug classes to prescribe for the current visit are:")
    assert count_tokens(text, tok) + 1 <= count_tokens(bare, tok) - 2
    assert "pneumonia, organism unspecified" in text  # the first diagnosis survives


def test_drug_names_and_answer(vocab):
    assert drug_names((2, 0), vocab) == ["other beta-lactam antibacterials", "insulins and analogues"]
    assert answer_text((1,), vocab) == "beta blocking agents"
    assert answer_text((), vocab) == ""
