# Slim API image: FastAPI + Redis client + Pillow. No torch.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv
COPY pyproject.toml README.md constraints.txt ./
COPY impress ./impress
COPY app ./app
# worker/ is a package of the distribution; the API never imports its engine.
COPY worker/__init__.py ./worker/__init__.py
RUN pip install --no-cache-dir ".[api]"
RUN useradd --create-home impress
USER impress
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["uvicorn", "app.asgi:app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
