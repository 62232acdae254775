"""LSLo pruning and layer edge cases against hand-computed values (spec: lslo.md, C1)."""

import math

import pytest
import torch
import torch.nn as nn

from xlt.errors import ConfigError
from xlt.lslo import PruningSchedule, plot_pruning_report, prune_step, pruning_ratio, pruning_report
from xlt.lslo.layer import LSLoLinear, LSLoRoute


class _TwoLayers:
    """The part of an LSLo model the pruning functions use: two layers, ranks [1, 2]."""

    def __init__(self, names=("en", "fr")):
        route = LSLoRoute()
        self.names = list(names)
        ranks = [1, 2][:len(self.names)]
        self.lslo_layers = {"enc.0.q": LSLoLinear(nn.Linear(2, 2), ranks, "src", route),
                            "dec.0.q": LSLoLinear(nn.Linear(2, 3), ranks, "tgt", route)}
        self.layer_of = {"enc.0.q": ("encoder", 0), "dec.0.q": ("decoder", 0)}

    def subspace_names(self):
        return self.names


def test_pruning_schedule_defaults_are_the_reference_flags():
    # --pruning-t1 2 --pruning-t2 10 --target-pruning-ratio 0.9, language pools (spec: lslo.md)
    schedule = PruningSchedule()
    assert (schedule.t1, schedule.t2, schedule.target, schedule.pool) == (2, 10, 0.9, "language")
    # C1: 0 at epoch 2, 0.9 * (1 - 0.9**3) at epoch 3, 0.9 from epoch 12 on
    assert pruning_ratio(1, 2, 10, 0.9) is None
    assert pruning_ratio(2, 2, 10, 0.9) == 0.0
    assert pruning_ratio(3, 2, 10, 0.9) == pytest.approx(0.9 * (1 - 0.9 ** 3))
    assert pruning_ratio(11, 2, 10, 0.9) == pytest.approx(0.8991)
    assert pruning_ratio(12, 2, 10, 0.9) == pytest.approx(0.9)
    assert pruning_ratio(13, 2, 10, 0.9) == 0.9
    assert schedule.shortfall(12) is None and schedule.shortfall(15) is None
    assert "0.899" in schedule.shortfall(11) and "t1 + t2 = 12" in schedule.shortfall(11)
    assert "never starts" in schedule.shortfall(1)


@pytest.mark.parametrize("t2", [0, -1])
def test_t2_below_one_epoch_is_a_config_error(t2):
    with pytest.raises(ConfigError, match="t2"):
        pruning_ratio(5, 2, t2, 0.5)
    with pytest.raises(ConfigError, match="t2"):
        PruningSchedule(t1=2, t2=t2)


@pytest.mark.parametrize("target", [-0.1, 1.1])
def test_target_outside_zero_one_is_a_config_error(target):
    with pytest.raises(ConfigError, match="target"):
        pruning_ratio(5, 2, 3, target)
    assert pruning_ratio(5, 2, 3, 1.0) == 1.0 and pruning_ratio(2, 2, 3, 0.0) == 0.0


def test_unknown_pool_and_ratio_are_config_errors():
    with pytest.raises(ConfigError, match="pool"):
        PruningSchedule(pool="global")
    with pytest.raises(ConfigError, match="ratio"):
        prune_step(_TwoLayers(), 1.5)
    with pytest.raises(ConfigError, match="ratio"):
        prune_step(_TwoLayers(), -0.5)


def _set_b(model):
    # B rows: language 0 = row 0, language 1 = rows 1..2 of each layer
    with torch.no_grad():
        model.lslo_layers["enc.0.q"].lora_b.copy_(torch.tensor([[1.0, -6.0], [2.0, 0.0], [-3.0, 5.0]]))
        model.lslo_layers["dec.0.q"].lora_b.copy_(torch.tensor([[4.0, 0.5, 7.0], [0.0, -8.0, 9.0],
                                                               [1.5, 0.0, 0.25]]))


def test_prune_step_masks_the_smallest_magnitudes_of_each_pool():
    model = _TwoLayers()
    _set_b(model)
    # language pools: en = {1, -6, 4, 0.5, 7} (5 entries), fr = {2, 0, -3, 5, 0, -8, 9, 1.5, 0, 0.25} (10)
    counts = prune_step(model, 0.4, "language")
    assert counts == {"en": 2, "fr": 4}
    enc, dec = model.lslo_layers["enc.0.q"], model.lslo_layers["dec.0.q"]
    # en: |0.5| and |1| go; fr: the three zeros and |0.25| go
    assert enc.lora_b_mask.tolist() == [[False, True], [True, False], [True, True]]
    assert dec.lora_b_mask.tolist() == [[True, False, True], [False, True, True], [True, False, False]]
    assert enc.effective_b().tolist() == [[0.0, -6.0], [2.0, 0.0], [-3.0, 5.0]]
    # layer pools: encoder = 6 entries -> round(0.5 * 6) = 3; decoder = 9 -> round(4.5) = 4
    counts = prune_step(model, 0.5, "layer")
    assert counts == {"encoder/0": 3, "decoder/0": 4}
    assert enc.lora_b_mask.tolist() == [[False, True], [False, False], [True, True]]
    assert dec.lora_b_mask.tolist() == [[True, False, True], [False, True, True], [True, False, False]]
    # a pool where exactly one entry goes: en round(0.2 * 5) = 1, the |0.5|
    fresh = _TwoLayers()
    _set_b(fresh)
    assert prune_step(fresh, 0.2, "language") == {"en": 1, "fr": 2}
    assert fresh.lslo_layers["dec.0.q"].lora_b_mask[0].tolist() == [True, False, True]
    assert fresh.lslo_layers["enc.0.q"].lora_b_mask[0].tolist() == [True, True]
    assert prune_step(model, 0.0) == {"en": 0, "fr": 0}
    assert all(bool(layer.lora_b_mask.all()) for layer in model.lslo_layers.values())


def test_schedule_prunes_from_t1_and_bakes_the_mask():
    model = _TwoLayers()
    _set_b(model)
    schedule = PruningSchedule(t1=2, t2=2, target=0.5)
    assert schedule.begin_epoch(model, 1) is None and schedule.history == []
    # epoch 3: 0.5 - 0.5 * (1 - 1/2)^3 = 0.4375; en: round(2.1875) = 2, fr: round(4.375) = 4
    assert schedule.begin_epoch(model, 3) == pytest.approx(0.4375)
    assert schedule.history == [{"epoch": 3, "ratio": pytest.approx(0.4375), "masked": 6}]
    schedule.end_epoch(model)
    enc = model.lslo_layers["enc.0.q"]
    assert enc.lora_b_mask is None
    assert enc.lora_b.tolist() == [[0.0, -6.0], [2.0, 0.0], [-3.0, 5.0]]


def test_pruning_report_counts_nonzero_b_entries_per_language_and_layer():
    model = _TwoLayers()
    _set_b(model)
    report = pruning_report(model)
    assert report["languages"] == ["en", "fr"]
    assert report["layers"] == ["encoder.0", "decoder.0"]
    # en: encoder row 0 (2 entries, both non-zero), decoder row 0 (3, all non-zero)
    # fr: encoder rows 1..2 (4 entries, 3 non-zero), decoder rows 1..2 (6 entries, 4 non-zero)
    assert report["surviving"] == [[2, 3], [3, 4]]
    assert report["total"] == [[2, 3], [4, 6]]
    assert report["per_language"] == {"en": {"surviving": 5, "total": 5}, "fr": {"surviving": 7, "total": 10}}
    assert report["b_parameters"] == 15 and report["b_surviving"] == 12
    assert report["surviving_fraction"] == pytest.approx(12 / 15)
    # A: (2 x 3) + (2 x 3) entries, never pruned
    assert report["a_parameters"] == 12
    fresh = pruning_report(_TwoLayers())  # B starts at zero
    assert fresh["b_surviving"] == 0 and fresh["surviving_fraction"] == 0.0


def test_pruning_report_of_a_model_without_b_entries():
    empty = _TwoLayers()
    empty.lslo_layers, empty.layer_of = {}, {}
    report = pruning_report(empty)
    assert report["b_parameters"] == 0 and report["surviving_fraction"] == 0.0
    assert report["surviving"] == [[], []]


def test_pruning_plot_shows_the_surviving_fraction():
    report = {"languages": ["en", "fr"], "layers": ["encoder.0", "decoder.0"],
              "surviving": [[1, 2], [0, 4]], "total": [[2, 8], [0, 4]]}
    figure = plot_pruning_report(report, title="t")
    image = figure.axes[0].images[0]
    # surviving / total, with an empty cell (total 0) shown as 0
    assert image.get_array().tolist() == [[0.5, 0.25], [0.0, 1.0]]
    assert image.get_clim() == (0, 1)
    assert [t.get_text() for t in figure.axes[0].texts] == ["1", "2", "0", "4"]
    # dark cells (< 0.5) get white text
    assert [t.get_color() for t in figure.axes[0].texts] == ["black", "white", "white", "black"]
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_seeded_reset_parameters_is_reproducible_and_uses_each_rank_bound():
    layer = LSLoLinear(nn.Linear(64, 64), [1, 4], "src", LSLoRoute())
    with torch.no_grad():
        layer.lora_b.fill_(1.0)
    layer.lora_b_mask = torch.ones_like(layer.lora_b, dtype=torch.bool)
    layer.reset_parameters(generator=torch.Generator().manual_seed(7))
    first = layer.lora_a.detach().clone()
    assert layer.lora_b.abs().sum() == 0 and layer.lora_b_mask is None
    torch.manual_seed(123)  # the global generator must not matter
    layer.reset_parameters(generator=torch.Generator().manual_seed(7))
    assert torch.equal(layer.lora_a, first)
    layer.reset_parameters(generator=torch.Generator().manual_seed(8))
    assert not torch.equal(layer.lora_a, first)
    # U(-1/sqrt(r), 1/sqrt(r)) per subspace: rank 1 -> bound 1, rank 4 -> bound 0.5
    a1, a4 = first[:, :1], first[:, 1:]
    assert a1.abs().max() <= 1.0 and a1.abs().max() > 0.75
    assert a4.abs().max() <= 0.5 and a4.abs().max() > 0.45
    assert math.isclose(float(a4.std()), 0.5 / math.sqrt(3), rel_tol=0.15)


@pytest.mark.parametrize("base_dtype,adapter_dtype", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                                      (torch.bfloat16, torch.float32), (torch.float16, torch.float32)])
def test_adapter_parameters_are_at_least_float32(base_dtype, adapter_dtype):
    layer = LSLoLinear(nn.Linear(4, 4).to(base_dtype), [2, 1], "src", LSLoRoute())
    assert layer.lora_a.dtype == adapter_dtype and layer.lora_b.dtype == adapter_dtype


@pytest.mark.parametrize("start,expected", [(0, [6.0, -3.0, 3.0, 4.0, 5.0, 6.0]),
                                            (3, [1.0, 2.0, 3.0, 18.0, -9.0, 6.0])])
def test_feature_slice_adapter_by_hand(start, expected):
    from xlt.errors import ModelError

    base = nn.Linear(6, 6)
    with torch.no_grad():
        base.weight.copy_(torch.eye(6))
        base.bias.zero_()
    route = LSLoRoute()
    layer = LSLoLinear(base, [1], "src", route, dim=2, start_idx=start)
    with torch.no_grad():
        layer.lora_a.copy_(torch.tensor([[1.0], [2.0]]))   # (d_in 2, r 1)
        layer.lora_b.copy_(torch.tensor([[1.0, -1.0]]))    # (r 1, d_out 2)
    route.src = torch.tensor([0])
    x = torch.arange(1.0, 7.0).view(1, 1, 6)
    # slice [s, s + 2): (x_s + 2 x_{s+1}) * [1, -1] added to y = x there, nothing elsewhere
    assert layer(x).view(-1).tolist() == expected
    folded = torch.eye(6) + layer.delta_weight(0)
    assert (x.view(-1) @ folded.T).tolist() == expected
    with pytest.raises(ModelError, match="does not fit"):
        LSLoLinear(nn.Linear(6, 6), [1], "src", route, dim=4, start_idx=3)


def test_layer_description():
    route = LSLoRoute()
    assert LSLoLinear(nn.Linear(6, 5), [2, 1], "tgt", route).extra_repr() == \
        "in=6, out=5, rectangular, direction=tgt, ranks=[2, 1]"
    assert LSLoLinear(nn.Linear(6, 6), [1], "src", route, dim=2, start_idx=3).extra_repr() == \
        "in=6, out=6, slice=[3, 5), direction=src, ranks=[1]"
