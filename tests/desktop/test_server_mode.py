"""The app on a `star serve` server instead of a local bundle: the reasoning streams into the tabs, the
result (samples, vote, masks) is the one the local engine gives, and Stop ends the server's work."""

from pathlib import Path

import numpy as np
import pytest

from engine import samples
from tests.models import require

SCENE = Path(samples.__file__).parent / "scene.png"


@pytest.fixture(scope="module")
def server():
    require("httpx")
    require("fastapi")
    from engine.serve.app import ServeSettings, create_app
    from engine.serve.server import BackgroundServer
    from engine.serve.setup import load_workers

    workers = load_workers([], device="cpu", threads=None, max_samples=8, max_new_tokens=1024, queue_size=4,
                           verify="quick")
    with BackgroundServer(create_app(workers, ServeSettings())) as url:
        yield url, workers["nano"]
    for w in workers.values():
        w.shutdown()


def test_the_app_on_a_server_gives_the_local_answer_and_stops(qtbot, home, server):
    require("PySide6")
    from desktop.window import MainWindow
    from desktop.worker import server_loader
    from engine.pipeline import load_reasoner, sampling_for
    from engine.rle import decode

    url, worker = server
    w = MainWindow(home=home, loader=server_loader(url))
    qtbot.addWidget(w)
    w.show()
    assert w.open_image(SCENE)
    w.set_samples(8)
    w.query.setCurrentText("the red cup")
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        assert w.run_query()
    assert "on the server" in w.device.text()
    assert all(w.reasoning.text(i) for i in range(8))  # every sample's tokens streamed in
    data = w.outcome.data
    assert not data["cancelled"] and len(data["samples"]) == 8

    local = load_reasoner(max_samples=8)
    try:
        from engine.images import load_image

        ref = local.run(load_image(SCENE), "the red cup", 8,
                        sampling=sampling_for(8, constrained=local.grammar(None), temperature=local.temperature(None)))
    finally:
        local.close()
    assert [s["text"] for s in data["samples"]] == [s.text for s in ref.samples]
    assert np.array_equal(decode(data["mask"]), ref.mask)

    w.set_samples(8)
    w.query.setCurrentText("something to drink from")
    with qtbot.waitSignal(w.run_finished, timeout=120_000):
        assert w.run_query()
        qtbot.waitUntil(lambda: any(w.reasoning.text(i) for i in range(8)), timeout=60_000)
        w.cancel()
    assert w.reasoning_outcome.data["cancelled"] and w.stage.text().startswith("Stopped while")
    assert w.outcome is not None and w.outcome.data == data  # the last complete result stays on screen
    qtbot.waitUntil(lambda: worker.queued == 0 and worker._current is None, timeout=30_000)
