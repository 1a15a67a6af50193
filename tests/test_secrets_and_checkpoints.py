"""No secrets written to run.json, no code run from a checkpoint, no checkpoint lost in a swap."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends.models import ModelError, parse_model_spec


@pytest.mark.parametrize(
    "spec",
    [
        "hf:pretrained=/x,token=hf_abc",
        "local-completions:model=m,apikey=sk-1",
        "local-completions:model=m,api-key=sk-1",
        "local-completions:model=m,Api_Key=sk-1",
        "local-completions:model=m,password=pw",
        "local-completions:model=m,client_secret=s",
        "local-completions:model=m,Authorization=Bearer x",
        "local-completions:model=m,base_url=http://user:PW@127.0.0.1:8000/v1/completions",
    ],
)
def test_a_credential_in_the_model_spec_is_refused_in_one_line(spec: str) -> None:
    with pytest.raises(ModelError) as refused:
        parse_model_spec(spec)
    message = str(refused.value)
    assert "\n" not in message and "looks like a credential" in message and "environment" in message


def test_arguments_that_only_look_alike_are_kept() -> None:
    spec = parse_model_spec(
        "local-completions:model=m,base_url=http://127.0.0.1:8000/v1/completions,tokenizer=gpt2,tokenizer_backend=huggingface,"
        "tokenized_requests=False,max_tokens=8,add_bos_token=True"
    )
    assert spec.args["tokenizer"] == "gpt2" and spec.args["max_tokens"] == "8"


class _RunsCode:
    """A pickle payload that would touch a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_is_loaded_as_data_and_a_crafted_one_runs_nothing(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from harness.tune.record import TuneError
    from harness.tune.train import load_trainer_state

    good = tmp_path / "good.pt"
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "step": 3, "loss_curve": [{"step": 1, "loss": 0.5}]}
    torch.save(state, good)
    loaded = load_trainer_state(good)
    assert loaded["step"] == 3 and torch.equal(loaded["rng"], state["rng"])
    optimizer.load_state_dict(loaded["optimizer"])

    marker = tmp_path / "ran"
    crafted = tmp_path / "trainer_state.pt"
    torch.save({"step": 1, "payload": _RunsCode(marker)}, crafted)
    with pytest.raises(TuneError, match="refusing to load it"):
        load_trainer_state(crafted)
    assert not marker.exists()


def test_a_kill_during_the_checkpoint_swap_leaves_the_previous_checkpoint_found(tmp_path: Path) -> None:
    from harness.tune.train import CHECKPOINT_DIR, STATE_FILE, _latest_checkpoint

    def complete(folder: Path) -> Path:
        folder.mkdir(parents=True)
        (folder / STATE_FILE).write_bytes(b"x")
        (folder / "adapter_model.safetensors").write_bytes(b"x")
        return folder

    assert _latest_checkpoint(tmp_path) is None
    # Killed after the old checkpoint was moved aside and before the new one got its name.
    old = complete(tmp_path / f".{CHECKPOINT_DIR}.old")
    (tmp_path / f".{CHECKPOINT_DIR}.tmp").mkdir()
    assert _latest_checkpoint(tmp_path) == old
    current = complete(tmp_path / CHECKPOINT_DIR)
    assert _latest_checkpoint(tmp_path) == current
