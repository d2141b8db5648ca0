# One image for the gpupin operator and node agent:
#   docker build -t gpupin:dev .
#   operator: args [operator]   agent: args [agent]   (the chart sets them)
# Not built in this repository's CI (no Docker engine there); kept deliberately simple.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator ./operator
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --upgrade pip \
 && /venv/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim
# nvidia-ml-py loads libnvidia-ml.so.1 at run time; the NVIDIA container runtime mounts it
# (agent pods use the nvidia RuntimeClass with NVIDIA_VISIBLE_DEVICES=all and
# NVIDIA_DRIVER_CAPABILITIES=utility). The operator needs no GPU.
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["gpupin"]
CMD ["operator"]
