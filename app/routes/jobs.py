"""Jobs: list, poll, fetch results and report files, cancel."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response

from impress.contract import ErrorCode, JobRecord, JobResult, JobState
from impress.store import JobStore

from ..deps import get_store
from ..errors import ApiError, error_responses
from ..schemas import JobList, JobView, job_view

router = APIRouter(prefix="/v1", tags=["jobs"])


def load_job(store: JobStore, job_id: str) -> JobRecord:
    record = store.get(job_id)
    if record is None:
        raise ApiError(404, ErrorCode.job_not_found, f"no job {job_id} (unknown, or expired)")
    return record


def finished_result(store: JobStore, job_id: str) -> JobResult:
    record = load_job(store, job_id)
    if record.state != JobState.succeeded or record.result is None:
        raise ApiError(409, ErrorCode.job_not_finished,
                       f"job {job_id} is {record.state.value}; results exist once it succeeded")
    return record.result


def blob_response(store: JobStore, blob: str, media_type: str, filename: str) -> Response:
    data = store.get_blob(blob)
    if data is None:
        raise ApiError(404, ErrorCode.result_not_found, "the result has expired")
    return Response(content=data, media_type=media_type, headers={"Content-Disposition": f'inline; filename="{filename}"'})


@router.get("/jobs", response_model=JobList, summary="Recent jobs, newest first")
def list_jobs(request: Request, limit: int = Query(20, ge=1, le=100, description="most jobs to return"),
              store: JobStore = Depends(get_store)) -> JobList:
    return JobList(jobs=[job_view(record, str(request.url_for("get_job", job_id=record.id)))
                         for record in store.recent(limit)])


@router.get("/jobs/{job_id}", response_model=JobView, responses=error_responses(404), summary="Poll a job")
def get_job(request: Request, job_id: str, store: JobStore = Depends(get_store)) -> JobView:
    return job_view(load_job(store, job_id), str(request.url_for("get_job", job_id=job_id)))


@router.get("/jobs/{job_id}/results/{index}", responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409)},
            response_class=Response, summary="A purified image as PNG")
def get_result(job_id: str, index: int, store: JobStore = Depends(get_store)) -> Response:
    images = finished_result(store, job_id).images
    if not 0 <= index < len(images):
        raise ApiError(404, ErrorCode.result_not_found, f"job {job_id} has {len(images)} result images")
    return blob_response(store, images[index].blob, "image/png", images[index].name)


@router.get("/jobs/{job_id}/files/{name}", responses={200: {"content": {"text/html": {}, "text/markdown": {}}},
                                                       **error_responses(404, 409)},
            response_class=Response, summary="A report file of an evaluation job")
def get_file(job_id: str, name: str, store: JobStore = Depends(get_store)) -> Response:
    files = {f.name: f for f in finished_result(store, job_id).files}
    if name not in files:
        raise ApiError(404, ErrorCode.result_not_found, f"job {job_id} has files: {', '.join(files) or 'none'}")
    return blob_response(store, files[name].blob, files[name].media_type, name)


@router.delete("/jobs/{job_id}", response_model=JobView, responses=error_responses(404, 409),
               summary="Cancel a job: a queued job never runs, a running one stops within a few steps")
def cancel_job(request: Request, job_id: str, store: JobStore = Depends(get_store)) -> JobView:
    record = load_job(store, job_id)
    if record.state.finished:
        raise ApiError(409, ErrorCode.job_already_finished, f"job {job_id} already {record.state.value}")
    return job_view(store.cancel(job_id) or record, str(request.url_for("get_job", job_id=job_id)))
