"""``needs_resources``: a model that needs SMILES on a cohort with drugs without any gets a one-line error before
training, from the library, the runner and the CLI."""

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


def test_smiles_models_refuse_drugs_without_smiles(no_smiles_cohort, demo_cohort):
    missing = sum(1 for s in no_smiles_cohort.smiles if not s)
    assert missing > 0
    for cls in (SafeDrug, MoleRec):
        with pytest.raises(ValueError, match=rf"^{cls.__name__} needs SMILES for every drug, but {missing} of "
                                             rf"{len(no_smiles_cohort.vocab.drugs)} drugs have none \(e.g. "):
            check_resources(cls, no_smiles_cohort)
        check_resources(cls, demo_cohort)
        check_resources(cls, Context.from_cohort(demo_cohort))
    check_resources(GAMENet, no_smiles_cohort)  # needs only the DDI matrix
    check_resources(Popular, no_smiles_cohort)


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


def test_runner_checks_resources_before_any_training(no_smiles_cohort, tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        runner = Runner(no_smiles_cohort, store, cache=tmp_path / "cache", progress=False, echo=lambda *_: None,
                        settings=EvalSettings(n_boot=20))
        with pytest.raises(ValueError, match="SafeDrug needs SMILES for every drug"):
            runner.run(["popular", "safedrug"], [0])
        assert store.runs() == []


def test_cli_gives_one_line(demo_dir, tmp_path):
    result = CliRunner().invoke(main, ["run", "--models", "safedrug", "--data", "mimic3", "--path", str(demo_dir),
                                       "--no-require-smiles", "--cache", str(tmp_path / "cache"),
                                       "--store", str(tmp_path / "r.db")])
    assert result.exit_code == 1
    assert "Error: SafeDrug needs SMILES for every drug" in result.output and "Traceback" not in result.output
    assert "[complete]" not in result.output and "[failed]" not in result.output  # nothing was trained
