"""``needs_resources``: a model whose resources are missing gets a one-line error before training, from the
library, the runner and the CLI; drugs without SMILES (``--no-require-smiles``) train with the fallback embedding."""

import dataclasses

import pytest
from click.testing import CliRunner

from baselines.gamenet import GAMENet
from baselines.molerec import MoleRec
from baselines.popular import Popular
from baselines.safedrug import SafeDrug
from medrec_bench.cli import main
from medrec_bench.data import PreprocessOptions, load_cohort
from medrec_bench.models import Context, check_resources
from medrec_bench.runner import EvalSettings, Runner
from medrec_bench.store import ResultStore


@pytest.fixture(scope="module")
def no_smiles_cohort(demo_dir, cache_root):
    """The MIMIC-III demo without ``require_smiles``: 6 of its 106 drug classes have no SMILES."""
    return load_cohort("mimic3", demo_dir, options=PreprocessOptions(require_smiles=False), cache=cache_root)


@pytest.fixture(scope="module")
def smiles_free_cohort(demo_cohort):
    """The demo cohort with every SMILES removed."""
    return dataclasses.replace(demo_cohort, smiles=tuple(() for _ in demo_cohort.smiles))


def test_smiles_models_accept_some_drugs_without_smiles(no_smiles_cohort, demo_cohort):
    assert sum(1 for s in no_smiles_cohort.smiles if not s) > 0
    for cls in (SafeDrug, MoleRec):
        check_resources(cls, no_smiles_cohort)
        check_resources(cls, Context.from_cohort(demo_cohort))


def test_smiles_models_refuse_a_cohort_without_any(smiles_free_cohort):
    n = len(smiles_free_cohort.vocab.drugs)
    for cls in (SafeDrug, MoleRec):
        with pytest.raises(ValueError, match=rf"^{cls.__name__} needs SMILES, but none of the {n} drugs has any$"):
            check_resources(cls, smiles_free_cohort)
    ctx = Context.from_cohort(smiles_free_cohort)
    ctx.smiles = ctx.smiles[:-1]
    with pytest.raises(ValueError, match=rf"SafeDrug needs one SMILES entry per drug \({n}\), not {n - 1}"):
        check_resources(SafeDrug, ctx)
    check_resources(GAMENet, smiles_free_cohort)  # needs only the DDI matrix
    check_resources(Popular, smiles_free_cohort)


def test_unknown_or_malformed_resources_are_errors(demo_cohort):
    class NeedsAtlas(Popular):
        needs_resources = frozenset({"atlas"})

    with pytest.raises(ValueError, match="NeedsAtlas needs the unknown resource 'atlas'"):
        check_resources(NeedsAtlas, demo_cohort)
    ctx = Context.from_cohort(demo_cohort)
    ctx.ddi = ctx.ddi[:-1]
    n = len(demo_cohort.vocab.drugs)
    with pytest.raises(ValueError, match=rf"GAMENet needs a DDI matrix of shape \({n}, {n}\), not \({n - 1}, {n}\)"):
        check_resources(GAMENet, ctx)


def test_runner_checks_resources_before_any_training(smiles_free_cohort, tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        runner = Runner(smiles_free_cohort, store, cache=tmp_path / "cache", progress=False, echo=lambda *_: None,
                        settings=EvalSettings(n_boot=20))
        with pytest.raises(ValueError, match="SafeDrug needs SMILES, but none"):
            runner.run(["popular", "safedrug"], [0])
        assert store.runs() == []


def test_cli_trains_a_molecule_model_on_a_cohort_with_drugs_without_smiles(demo_dir, tmp_path):
    result = CliRunner().invoke(main, ["run", "--models", "safedrug", "--data", "mimic3", "--path", str(demo_dir),
                                       "--no-require-smiles", "--cache", str(tmp_path / "cache"), "--n-boot", "20",
                                       "--set", "safedrug.epochs=1", "--set", "safedrug.emb_dim=16",
                                       "--store", str(tmp_path / "r.db")])
    assert result.exit_code == 0, result.output
    assert "[complete] safedrug" in result.output and "Traceback" not in result.output
