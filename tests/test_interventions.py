"""The intervention primitive on every tiny family: sites and widths, read, replace, stop, removal, errors."""

from __future__ import annotations

import inspect

import pytest
import torch

from locedit.models import Site, capture, family_for, intervene, recording_calls, run_until_stopped
from locedit.models.families import SITES, UnknownSiteError
from locedit.models.interventions import ModuleCall, NoSuchSiteError, StopForward, active_edits, module_at
from locedit.models.noise import SubjectNoise, noise_installed, noised_subject
from locedit.models.tokens import encode

PROMPT = "The mother tongue of Danielle Darrieux is"

pytestmark = pytest.mark.usefixtures("one_thread")


def ids_of(tok) -> torch.Tensor:
    return torch.tensor([encode(tok, PROMPT)])


def every_site(model) -> list[Site]:
    fam = family_for(model)
    return [fam.site(name) if "{}" not in fam.site(name).module else fam.site(name, 1) for name in SITES]


@torch.no_grad()
def test_every_site_has_the_width_of_the_family_table(tiny_model):
    model, tok = tiny_model
    ids = ids_of(tok)
    sites = every_site(model)
    with capture(model, sites) as got:
        model(input_ids=ids)
    assert set(got) == set(sites)
    for site in sites:
        assert got[site].shape == (1, ids.shape[1], site.width_of(model.config)), site
    fam = family_for(model)
    assert fam.site("mlp_down_input", 1).width_of(model.config) == fam.down_weight(model, 1).shape[1]


@torch.no_grad()
def test_replacing_the_last_block_output_sets_the_logits(tiny_model):
    model, tok = tiny_model
    fam = family_for(model)
    ids = ids_of(tok)
    clean = model(input_ids=ids).logits
    last = fam.site("block_output", fam.n_layers(model) - 1)
    h = torch.randn(1, ids.shape[1], last.width_of(model.config), generator=torch.Generator().manual_seed(0))
    with intervene(model, {last: lambda hidden: h}):
        replaced = model(input_ids=ids).logits
    expected = fam.unembed_module(model)(fam.module(model, fam.final_norm)(h))
    assert torch.equal(replaced, expected)
    assert torch.equal(model(input_ids=ids).logits, clean)


@torch.no_grad()
def test_replacing_an_input_is_what_the_module_sees(tiny_model):
    model, tok = tiny_model
    fam = family_for(model)
    key_in, key_out = fam.site("mlp_down_input", 2), fam.site("mlp_down_output", 2)
    with capture(model, [key_in, key_out]) as clean:
        model(input_ids=ids_of(tok))
    new_key = clean[key_in] * 0.5
    with intervene(model, {key_in: lambda k: new_key}), capture(model, [key_out]) as got:
        model(input_ids=ids_of(tok))
    assert torch.equal(got[key_out], module_at(model, key_out)(new_key))
    assert not torch.allclose(got[key_out], clean[key_out])


def keyword_call(block: torch.nn.Module, call: ModuleCall) -> ModuleCall:
    """The same call with every argument, the hidden state included, passed by name."""
    sig = inspect.signature(block.forward)
    named: dict = {}
    for name, value in sig.bind(*call.args, **call.kwargs).arguments.items():
        named.update(value if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD else {name: value})
    return ModuleCall((), named)


@torch.no_grad()
def test_block_inputs_work_positionally_and_by_keyword(tiny_model):
    model, tok = tiny_model
    site = family_for(model).site("block_input", 2)
    block = module_at(model, site)
    with recording_calls(model, [site]) as calls:
        model(input_ids=ids_of(tok))
    positional = calls[0]
    by_name = keyword_call(block, positional)
    assert by_name.args == () and torch.equal(by_name.hidden, positional.hidden)
    plain = positional.replay(block, positional.hidden)
    assert torch.equal(by_name.replay(block, positional.hidden), plain)
    for call in (positional, by_name):
        seen = []
        with intervene(model, {site: lambda h: seen.append(h) or h + 1.0}):
            out = block(*call.args, **call.kwargs)
        out = out[0] if isinstance(out, tuple) else out
        assert torch.equal(seen[0], positional.hidden)
        assert torch.equal(out, positional.replay(block, positional.hidden + 1.0))
        assert not torch.allclose(out, plain)


@torch.no_grad()
def test_stop_after_ends_the_forward_there(tiny_model):
    model, tok = tiny_model
    fam = family_for(model)
    early, late = fam.site("block_input", 1), fam.site("mlp_output", fam.n_layers(model) - 1)
    with capture(model, [early]) as full:
        model(input_ids=ids_of(tok))
    ran_late = []
    with capture(model, [early], stop_after=early) as got, intervene(model, {late: ran_late.append}):
        assert run_until_stopped(model, input_ids=ids_of(tok)) is None
        with pytest.raises(StopForward):
            model(input_ids=ids_of(tok))
    assert not ran_late and torch.equal(got[early], full[early])


def test_edits_are_removed_after_an_exception(tiny_model):
    model, tok = tiny_model
    fam = family_for(model)
    ids = ids_of(tok)
    with torch.no_grad():
        clean = model(input_ids=ids).logits
    site = fam.site("mlp_output", 0)

    def boom(hidden):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), intervene(model, {fam.site("attn_output", 0): lambda h: h * 0}):
        with intervene(model, {site: boom}):
            assert len(active_edits(model)) == 2
            model(input_ids=ids)
    assert active_edits(model) == []
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, clean)


def test_an_unknown_site_is_an_error_naming_it(tiny_model):
    model, tok = tiny_model
    fam = family_for(model)
    with pytest.raises(UnknownSiteError, match="unknown site 'mlp_out'.*mlp_output"):
        fam.site("mlp_out")
    with pytest.raises(ValueError, match="block_output .*needs a layer"), intervene(model, {fam.site("block_output"): print}):
        pass
    missing = Site("mlp_output", "nowhere.layers.{}.mlp", "output", ("hidden_size",)).at(3)
    good = fam.site("mlp_output", 0)
    with pytest.raises(NoSuchSiteError, match=r"mlp_output\[3\] \(output of nowhere.layers.3.mlp\) matches no module"):
        with intervene(model, {good: lambda h: h * 0, missing: lambda h: h * 0}):
            pass
    assert active_edits(model) == []
    with pytest.raises(ValueError, match="needs input sites"):
        with recording_calls(model, [good]):
            pass


def test_subject_noise_is_known_while_installed(tiny_llama):
    model, tok = tiny_llama
    ids = ids_of(tok)
    with torch.no_grad():
        clean = model(input_ids=ids).logits
    assert not noise_installed(model)
    with pytest.raises(RuntimeError, match="inside"):
        with noised_subject(model, SubjectNoise(0.5, default_span=(1, 3))):
            assert noise_installed(model)
            with torch.no_grad():
                assert not torch.allclose(model(input_ids=ids).logits, clean)
            raise RuntimeError("inside")
    assert not noise_installed(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, clean)
