"""Group ``quality`` in the default suite: the time-to-quality harness end to end, a few seconds a system.

The published run is ``python -m benchmarks.quality`` (budgets of tens of
seconds to minutes, tiny shakespeare and a megabyte of code); this checks that
the same code trains both systems under a budget, scores them and writes the
JSON, table and plot, on a small text so that it takes seconds.
"""
from __future__ import annotations

import json
import os

import pytest

from . import quality
from .test_cells import TORCH_MISSING, torch

TEXT = "".join(f"{i} York and Lancaster, {i * 7 % 13} roses; the king's men came to town.\n" for i in range(400))


@pytest.mark.skipif(torch is None and not os.environ.get("CI"), reason=TORCH_MISSING or "")
def test_quality_harness_trains_scores_and_writes(tmp_path):
    corpus = tmp_path / "york.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out"
    assert quality.main(["--budgets", "6", "--corpora", str(corpus), "--out-dir", str(out), "--threads", "1",
                         "--hidden-size", "32", "--batch-size", "4", "--seq-length", "16", "--no-readme"]) == 0
    run = json.loads((out / "quality.json").read_text())
    assert {r["system"] for r in run["results"]} == {"fastrnn", "pytorch"}
    for r in run["results"]:
        # the budget used: fastrnn stops in time for its final validation and save, so a little under it
        assert 0 < r["val_nats"] < 5 and r["steps"] > 0 and r["wall_s"] >= 4.8
    fastrnn_row = next(r for r in run["results"] if r["system"] == "fastrnn")
    assert fastrnn_row["decay_steps"] is not None  # the recipe's cosine was sized to the budget
    assert run["machine"]["cpu"] and run["machine"]["blas"]
    assert "| york.txt | fastrnn | 6 |" in (out / "quality.md").read_text()
    assert (out / "quality.png").stat().st_size > 10_000


def test_the_pytorch_side_trains_the_recipe_of_the_budget():
    """The recipe of the budget (the short, medium or long one: its size, rate and dropout), sizes overridden."""
    from fastrnn.config import LONG_BUDGET_SECONDS, MEDIUM_BUDGET_SECONDS, recipes_for

    short, long = quality.torch_recipe(25), quality.torch_recipe(LONG_BUDGET_SECONDS)
    medium = quality.torch_recipe(MEDIUM_BUDGET_SECONDS)
    for recipe, budget in ((short, 25), (medium, MEDIUM_BUDGET_SECONDS), (long, LONG_BUDGET_SECONDS)):
        expected = recipes_for(budget)["lstm"]
        assert {k: recipe[k] for k in expected if k in recipe} == {k: v for k, v in expected.items() if k in recipe}
    assert short["dropout"] == medium["dropout"] == 0 and long["dropout"] > 0
    assert short["hidden_size"] < medium["hidden_size"] < long["hidden_size"]
    assert quality.torch_recipe(LONG_BUDGET_SECONDS, {"hidden_size": 32})["hidden_size"] == 32


@pytest.mark.skipif(torch is None and not os.environ.get("CI"), reason=TORCH_MISSING or "")
def test_the_pytorch_model_drops_every_layers_outputs_in_training_only():
    from .torch_models import CharModel

    torch.manual_seed(0)
    dropped = CharModel("lstm", 7, 16, 2, input="embedding", batch_first=True, dropout=0.5)
    plain = CharModel("lstm", 7, 16, 2, input="embedding", batch_first=True)
    plain.load_state_dict(dropped.state_dict())
    ids = torch.randint(0, 7, (3, 9))
    with torch.no_grad():
        a, b = dropped(ids)[0], dropped(ids)[0]
        assert not torch.equal(a, b)  # masks drawn afresh in training mode
        dropped.eval()
        assert torch.equal(dropped(ids)[0], plain(ids)[0])
    assert dropped.rnn.dropout == 0.5 and dropped.drop.p == 0.5


@pytest.mark.parametrize("folder", [None, "quality-10min"])
def test_each_out_dir_writes_its_own_readme_section_linking_its_own_plot(tmp_path, folder):
    out_dir = quality.BENCH_RESULTS if folder is None else quality.BENCH_RESULTS / folder
    run = dict(date="2026-01-01", val_fraction=0.05, threads=2, results=[
        dict(corpus="york.txt", system="fastrnn", budget_s=600, wall_s=599.5, steps=1234, val_nats=1.25)],
        machine=dict(cpu="a CPU", cores=2, blas=[dict(architecture="Zen")], openblas_env={}))
    start, end = quality.readme_markers(out_dir)
    other = quality.readme_markers(quality.BENCH_RESULTS / "elsewhere")
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{start}\nold\n{end}\nb\n{other[0]}\nkept\n{other[1]}\n")
    assert quality.update_readme(run, out_dir, readme)
    text = readme.read_text()
    section = text[text.index(start) + len(start):text.index(end)]
    assert "| york.txt | fastrnn | 600 | 599.5 | 1234 | 1.2500 |" in section and "old" not in section
    assert f"]({'bench_results' if folder is None else 'bench_results/' + folder}/quality.png)" in section
    assert f"{other[0]}\nkept\n{other[1]}" in text  # another folder's section is left alone
    assert not quality.update_readme(run, quality.BENCH_RESULTS / "nowhere", readme)
