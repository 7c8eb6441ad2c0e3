"""Our six paper models have exactly the authors' state_dict: keys, shapes, dtypes, parameter kinds, counts.

Reference: ../shared/reference/ckpt-manifest/ (built from the authors' code; keys without ``model.``).
"""
from __future__ import annotations

import gc
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import refvec_util  # noqa: E402

from l2cocc_ros.core.config import get_preset  # noqa: E402
from l2cocc_ros.core.model.l2cocc import build_model  # noqa: E402

PAPER = [f"{d}_l2cocc_{v}" for d in ("semantickitti", "kitti360") for v in ("c", "l", "d")]



def _readme_totals() -> dict:
    """config -> (trainable, frozen nn.Parameters, buffer elements) from the README 'Totals' table."""
    text = (refvec_util.MANIFEST / "README.md").read_text()
    totals = {}
    for line in text.split("## Totals", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0] in PAPER:
            num = [int(re.sub(r"[^0-9]", "", re.sub(r"\(.*?\)", "", c))) for c in cells[3:6]]
            totals[cells[0]] = tuple(num)
    return totals


@pytest.fixture(scope="module", params=PAPER)
def built(request):
    model = build_model(get_preset(request.param).model)
    yield request.param, model
    del model
    gc.collect()


def test_readme_table_parsed():
    assert set(_readme_totals()) == set(PAPER)


def test_state_dict_matches_manifest(built):
    name, model = built
    ref = refvec_util.manifest_details(name)
    ours = model.state_dict()
    missing = sorted(set(ref) - set(ours))
    unexpected = sorted(set(ours) - set(ref))
    assert not missing and not unexpected, f"{name}: missing {missing[:5]} unexpected {unexpected[:5]}"
    wrong = [(k, list(v.shape), ref[k]["shape"]) for k, v in ours.items() if list(v.shape) != ref[k]["shape"]]
    assert not wrong, f"{name}: wrong shapes {wrong[:5]}"
    dtypes = [(k, str(v.dtype), ref[k]["dtype"]) for k, v in ours.items()
              if str(v.dtype).replace("torch.", "") != ref[k]["dtype"]]
    assert not dtypes, f"{name}: wrong dtypes {dtypes[:5]}"
    assert any(v.dtype == torch.int64 for v in ours.values())


def test_parameter_kinds_and_counts(built):
    name, model = built
    ref = refvec_util.manifest_details(name)
    params = dict(model.named_parameters())
    # kind: param = trainable nn.Parameter, param_frozen = requires_grad False, buffer = not a parameter
    for key, info in ref.items():
        if info["kind"] == "buffer":
            assert key not in params, f"{name}: {key} should be a buffer"
        else:
            assert params[key].requires_grad == (info["kind"] == "param"), f"{name}: {key} kind {info['kind']}"
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    frozen = sum(p.numel() for p in params.values() if not p.requires_grad)
    buffers = sum(b.numel() for b in model.buffers())
    assert (trainable, frozen, buffers) == _readme_totals()[name]
