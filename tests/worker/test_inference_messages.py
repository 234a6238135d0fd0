"""The messages of the `stylegan.render` task (worker.inference.messages): what the API sends survives
JSON unchanged, `op` and `outcome` pick the model, and a payload that fails validation becomes a
Refusal naming the field the user gave, with the shared vocabulary's message."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from gan.vocabulary import MAX_SEED
from worker.inference.messages import (
    RENDER_REPLY,
    RENDER_REQUEST,
    ImageOptions,
    MixRequest,
    ModelRef,
    Refusal,
    RenderedImage,
    SampleRequest,
    SeedLatent,
    WLatent,
    WRequest,
    encode_w,
    refusal_from,
)
from worker.inference.tasks import run_render
from worker.settings import Settings

MODEL = ModelRef(file_key="models/abc.safetensors")
W = np.arange(8, dtype=np.float32).reshape(2, 4) / 3


def _wire(message: Any) -> Any:
    """What crosses the broker: the JSON dump, through a JSON string and back."""
    return json.loads(json.dumps(message.model_dump(mode="json")))


@pytest.mark.parametrize(
    "request_",
    [
        SampleRequest(model=MODEL, seed=MAX_SEED),
        SampleRequest(
            model=MODEL,
            seed=0,
            format="webp",
            image=ImageOptions(
                psi=-0.5, cutoff=3, noise="random", class_idx=2, translate=(0.25, -1), rotate=45
            ),
        ),
        WRequest(model=MODEL, w=encode_w(W), image=ImageOptions(noise="none")),
        MixRequest(model=MODEL, row=SeedLatent(seed=3), col=WLatent.from_array(W), styles="coarse"),
    ],
    ids=["sample", "sample-all-options", "w", "mix"],
)
def test_requests_round_trip_through_json(request_: SampleRequest | WRequest | MixRequest) -> None:
    back = RENDER_REQUEST.validate_python(_wire(request_))
    assert type(back) is type(request_) and back == request_


def test_op_picks_the_request_kind_and_w_bytes_travel_as_base64() -> None:
    wire = _wire(WRequest(model=MODEL, w=encode_w(W)))
    assert wire["op"] == "w" and isinstance(wire["w"], str)
    back = RENDER_REQUEST.validate_python(wire)
    assert isinstance(back, WRequest)
    assert np.array_equal(np.frombuffer(back.w, dtype="<f4").reshape(2, 4), W)
    mix = _wire(MixRequest(model=MODEL, row=SeedLatent(seed=1), col=SeedLatent(seed=2), styles="0-1"))
    assert mix["op"] == "mix" and mix["row"] == {"seed": 1}
    assert isinstance(RENDER_REQUEST.validate_python(mix), MixRequest)


def test_replies_round_trip_and_outcome_picks_the_kind() -> None:
    image = RenderedImage(data=b"\x89PNG\r\n", content_type="image/png", batch_size=3, width=16, height=16)
    refusal = Refusal(field="styles", detail="style band 'fine' holds no layers")
    for reply in (image, refusal):
        wire = _wire(reply)
        assert RENDER_REPLY.validate_python(wire) == reply
    assert _wire(image)["outcome"] == "image" and _wire(refusal)["outcome"] == "refused"


def _refused(payload: dict[str, Any]) -> Refusal:
    with pytest.raises(ValidationError) as caught:
        RENDER_REQUEST.validate_python(payload)
    return refusal_from(caught.value)


def _sample(**changes: Any) -> dict[str, Any]:
    wire: dict[str, Any] = _wire(SampleRequest(model=MODEL, seed=1))
    return {**wire, **changes}


def test_a_bad_noise_mode_is_refused_naming_noise() -> None:
    refusal = _refused(_sample(image={"noise": "loud"}))
    assert refusal.field == "noise"
    assert "invalid noise mode 'loud'" in refusal.detail and "const, random, none" in refusal.detail


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1])
def test_an_out_of_range_seed_is_refused_naming_seed(seed: int) -> None:
    refusal = _refused(_sample(seed=seed))
    assert refusal.field == "seed" and f"seed {seed} is out of range" in refusal.detail
    # Inside a mix the field is the latent the user gave (row or col), not the nested `seed`.
    mix = _wire(MixRequest(model=MODEL, row=SeedLatent(seed=1), col=SeedLatent(seed=2), styles="0"))
    assert _refused({**mix, "col": {"seed": seed}}).field == "col"


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"format": "gif"}, "format"),
        ({"image": {"psi": "nan"}}, "psi"),
        ({"image": {"translate": [0.1]}}, "translate"),
        ({"image": {"class_idx": -1}}, "class_idx"),
        ({"image": {"trunc": 0.5}}, "trunc"),  # a field one side added and the other ignores
        ({"model": {}}, "model"),
        ({"op": "paint"}, "op"),
    ],
)
def test_other_bad_fields_are_named(changes: dict[str, Any], field: str) -> None:
    assert _refused(_sample(**changes)).field == field


def test_a_latent_that_is_neither_seed_nor_w_is_refused_naming_it() -> None:
    mix = _wire(MixRequest(model=MODEL, row=SeedLatent(seed=1), col=SeedLatent(seed=2), styles="0"))
    assert _refused({**mix, "row": {"z": 1}}).field == "row"
    assert _refused({**mix, "row": {"w": "not base64!"}}).field == "row"


def test_messages_are_frozen_values() -> None:
    request = SampleRequest(model=MODEL, seed=1)
    with pytest.raises(ValidationError):
        request.seed = 2
    assert hash(request) == hash(SampleRequest(model=MODEL, seed=1))


def test_the_task_body_answers_a_malformed_request_with_a_refusal(tmp_path: Any) -> None:
    # Validation comes first: no model is loaded, no batcher started for a payload that fails it.
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:9/0", inference_device="cpu")
    assert run_render(settings, _sample(image={"noise": "loud"})) == Refusal(
        field="noise", detail="invalid noise mode 'loud': use one of const, random, none"
    )
