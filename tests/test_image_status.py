"""A job's per-image status: an image that fails on its own (its loss not finite) is recorded with its
code while the others succeed, and each image shows its state, error and result link."""
from __future__ import annotations

import numpy as np

from impress.contract import JobKind, JobState, PurifyParams
from impress.records import InputImage
from impress.settings import Settings
from impress.views import job_view
from tests.support import photo, png_bytes


def test_one_image_failing_leaves_the_others_succeeded(small_vae_dir, fast_store, monkeypatch, one_torch_thread):
    import worker.engine.pipeline as pipeline
    from worker.engine.purify import NonFiniteLoss
    from worker.runner import run_job

    real = pipeline.purify

    def purify_refusing_black(vae, distance, x, *args, **kwargs):   # a black picture's loss "is not finite"
        if (x.flatten(1).amax(dim=1) < -0.99).any():
            raise NonFiniteLoss("the loss is not finite at step 1")
        return real(vae, distance, x, *args, **kwargs)
    monkeypatch.setattr(pipeline, "purify", purify_refusing_black)

    store = fast_store
    pictures = {"a.png": photo(24, 16, seed=1), "black.png": np.zeros((16, 24, 3), np.uint8),
                "c.png": photo(24, 16, seed=2)}
    inputs = [InputImage(name=name, blob=store.put_blob(png_bytes(rgb)), width=24, height=16, format="PNG")
              for name, rgb in pictures.items()]
    params = PurifyParams(preset="photoguard", iters=2, lr=0.01, alpha=0.5, delta=0.0, noise=0.05, early_stop=False)
    job_id = store.create(JobKind.purify, params, inputs, vae=str(small_vae_dir), perceptual="dssim").id
    assert run_job(store, Settings(_env_file=None, device="cpu"), job_id, on_time_limit=TimeoutError) == "succeeded"

    view = job_view(store.get(job_id), f"http://api/v1/jobs/{job_id}")
    assert [(im.name, im.state) for im in view.images] == [
        ("a.png", JobState.succeeded), ("black.png", JobState.failed), ("c.png", JobState.succeeded)]
    black = view.images[1]
    assert black.error.code == "numerical_error" and black.result_url is None
    assert view.images[2].result_url == view.results[1].url == f"http://api/v1/jobs/{job_id}/results/1"
    assert view.images[2].manifest_url.endswith("/results/1/manifest")


def test_all_images_failing_fail_the_job_with_their_code(small_vae_dir, fast_store, monkeypatch, one_torch_thread):
    import worker.engine.pipeline as pipeline
    from worker.engine.purify import NonFiniteLoss
    from worker.runner import run_job

    def never(*_, **__):
        raise NonFiniteLoss("the loss is not finite at step 1")
    monkeypatch.setattr(pipeline, "purify", never)
    store = fast_store
    item = InputImage(name="a.png", blob=store.put_blob(png_bytes(photo(24, 16))), width=24, height=16, format="PNG")
    job_id = store.create(JobKind.purify, PurifyParams(preset="photoguard", iters=2, lr=0.01, alpha=0.5, delta=0.0,
                                                       noise=0.05), [item], vae=str(small_vae_dir), perceptual="dssim").id
    assert run_job(store, Settings(_env_file=None, device="cpu"), job_id, on_time_limit=TimeoutError) == "failed"
    view = job_view(store.get(job_id), "http://api/v1/jobs/x")
    assert view.error.code == "numerical_error"
    assert [(im.state, im.error.code) for im in view.images] == [(JobState.failed, "numerical_error")]
