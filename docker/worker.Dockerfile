# CUDA worker image: torch (pinned, CUDA build), diffusers, lpips, Celery.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HOME=/models/hf TORCH_HOME=/models/torch
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv
COPY pyproject.toml README.md constraints.txt ./
COPY impress ./impress
COPY app ./app
COPY worker ./worker
RUN pip install --no-cache-dir -c constraints.txt torch torchvision \
    && pip install --no-cache-dir -c constraints.txt ".[worker]"
RUN useradd --create-home impress && mkdir -p /models && chown impress /models
USER impress
# One prefork process per GPU; models load inside the child on its first job.
CMD ["impress", "worker", "--concurrency", "1"]
