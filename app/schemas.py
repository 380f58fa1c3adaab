"""The API's job shapes live on the ground floor (impress/views.py), shared with the workers' webhooks
and the client; the routes import them from here."""
from impress.views import Accepted, FileLink, JobList, JobView, Progress, ResultLink, job_view

__all__ = ["Accepted", "FileLink", "JobList", "JobView", "Progress", "ResultLink", "job_view"]
