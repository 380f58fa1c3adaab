"""Jobs: list the caller's, poll one, fetch its results and report files, cancel it, delete its data.

A job belongs to the key that created it: to any other key each of its URLs answers 404, exactly as
for a job that does not exist, so an id leaks nothing. To its owner, a job that expired (its
tombstone, kept IMPRESS_TOMBSTONE_TTL_S) answers 410 `gone`, and so do the result and file URLs of a
job whose data was deleted."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from impress.contract import ErrorCode, JobState
from impress.manifest import ImageManifest
from impress.records import JobRecord, JobResult
from impress.store import JobStore

from ..auth import Caller
from ..deps import CallerDep, StoreDep
from ..errors import ApiError, error_responses
from ..schemas import JobList, JobView, job_view
from ..security_headers import download_headers

router = APIRouter(prefix="/v1", tags=["jobs"])


def load_job(store: JobStore, job_id: str, caller: Caller) -> JobRecord:
    record = store.get(job_id)
    if record is not None and record.owner == caller.owner:
        return record
    if record is None and store.owner_of_gone(job_id) == caller.owner:
        raise ApiError(410, ErrorCode.gone, f"job {job_id} has expired; its data is deleted")
    raise ApiError(404, ErrorCode.job_not_found, f"no job {job_id}")


def finished_result(store: JobStore, job_id: str, caller: Caller) -> JobResult:
    record = load_job(store, job_id, caller)
    if record.data_deleted_at is not None:
        raise ApiError(410, ErrorCode.gone, f"the inputs and results of job {job_id} were deleted")
    if record.state != JobState.succeeded or record.result is None:
        raise ApiError(409, ErrorCode.job_not_finished,
                       f"job {job_id} is {record.state.value}; results exist once it succeeded")
    return record.result


def blob_response(store: JobStore, blob: str, media_type: str, filename: str) -> Response:
    data = store.get_blob(blob)
    if data is None:
        raise ApiError(410, ErrorCode.gone, "the result has expired")
    return Response(content=data, media_type=media_type, headers=download_headers(filename))


@router.get("/jobs", response_model=JobList, summary="The caller's most recent jobs, newest first")
def list_jobs(request: Request, store: StoreDep, caller: CallerDep,
              limit: int = Query(20, ge=1, le=200)) -> JobList:
    return JobList(jobs=[job_view(record, str(request.url_for("get_job", job_id=record.id)))
                         for record in store.recent(caller.owner, limit)])


@router.get("/jobs/{job_id}", response_model=JobView, responses=error_responses(404, 410), summary="Poll a job")
def get_job(request: Request, job_id: str, store: StoreDep,
            caller: CallerDep) -> JobView:
    return job_view(load_job(store, job_id, caller), str(request.url_for("get_job", job_id=job_id)))


@router.get("/jobs/{job_id}/results/{index}",
            responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409, 410)},
            response_class=Response, summary="A purified image as PNG")
def get_result(job_id: str, index: int, store: StoreDep,
               caller: CallerDep) -> Response:
    images = finished_result(store, job_id, caller).images
    if not 0 <= index < len(images):
        raise ApiError(404, ErrorCode.result_not_found, f"job {job_id} has {len(images)} result images")
    return blob_response(store, images[index].blob, "image/png", images[index].name)


@router.get("/jobs/{job_id}/results/{index}/manifest", response_model=ImageManifest,
            responses=error_responses(404, 409, 410),
            summary="A result's manifest: what was done, by what, to what, with what effect, when (signed in the PNG)")
def get_result_manifest(job_id: str, index: int, store: StoreDep, caller: CallerDep) -> ImageManifest:
    """The same manifest is embedded in the result PNG as a C2PA manifest, signed (`impress verify FILE`
    checks it); `signature.development` is true while the service signs with its development certificate."""
    images = finished_result(store, job_id, caller).images
    if not 0 <= index < len(images):
        raise ApiError(404, ErrorCode.result_not_found, f"job {job_id} has {len(images)} result images")
    if images[index].manifest is None:
        raise ApiError(404, ErrorCode.result_not_found, f"result {index} of job {job_id} has no manifest")
    return images[index].manifest


@router.get("/jobs/{job_id}/files/{name}", responses={200: {"content": {"text/html": {}, "text/markdown": {}}},
                                                       **error_responses(404, 409, 410)},
            response_class=Response, summary="A report file of an evaluation job")
def get_file(job_id: str, name: str, store: StoreDep,
             caller: CallerDep) -> Response:
    files = {f.name: f for f in finished_result(store, job_id, caller).files}
    if name not in files:
        raise ApiError(404, ErrorCode.result_not_found, f"job {job_id} has files: {', '.join(files) or 'none'}")
    return blob_response(store, files[name].blob, files[name].media_type, name)


@router.delete("/jobs/{job_id}", response_model=JobView, responses=error_responses(404, 409, 410),
               summary="Cancel a job: a queued job never runs, a running one stops within a few steps")
def cancel_job(request: Request, job_id: str, store: StoreDep,
               caller: CallerDep) -> JobView:
    record = load_job(store, job_id, caller)
    if record.state.finished:
        raise ApiError(409, ErrorCode.job_already_finished, f"job {job_id} already {record.state.value}")
    return job_view(store.cancel(job_id) or record, str(request.url_for("get_job", job_id=job_id)))


@router.delete("/jobs/{job_id}/data", status_code=204, response_class=Response, responses=error_responses(404, 409),
               summary="Delete a finished job's inputs and results now (their URLs answer 410 gone since)")
def delete_job_data(job_id: str, store: StoreDep, caller: CallerDep) -> Response:
    """Inputs, results, report files and the event stream go at once; the job's record (state,
    parameters, scores) stays until it expires, with `data_deleted_at`. Cancel a queued or running job
    first (409 job_not_finished until it has stopped). Deleting again, or after expiry, is 204."""
    try:
        record = load_job(store, job_id, caller)
    except ApiError as exc:
        if exc.status == 410:   # expired: already deleted
            return Response(status_code=204)
        raise
    if not store.delete_data(record):
        raise ApiError(409, ErrorCode.job_not_finished,
                       f"job {job_id} is {record.state.value}: cancel it (DELETE /v1/jobs/{job_id}) first")
    return Response(status_code=204)
