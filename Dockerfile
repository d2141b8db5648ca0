# One image for the gpupin operator and node agent:
#   docker build -t gpupin:dev .
#   operator: args [operator]   agent: args [agent]   (the chart sets them)
# Where the build cannot reach a package index, put the wheels in build/wheelhouse
# (pip wheel -c constraints.txt -w build/wheelhouse . setuptools wheel) and add
#   --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/src/build/wheelhouse
# (the kind tier does: hack/kind-up.sh). Builds with the legacy builder too (DOCKER_BUILDKIT=0).

FROM python:3.11-slim AS build
# pip reads both from the environment; unset, it uses its index as usual
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
WORKDIR /src
# .dockerignore lets in only pyproject.toml, constraints.txt, README.md, operator/ and build/wheelhouse/
COPY . .
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim
# nvidia-ml-py loads libnvidia-ml.so.1 at run time; the NVIDIA container runtime mounts it
# (agent pods use the nvidia RuntimeClass with NVIDIA_VISIBLE_DEVICES=all and
# NVIDIA_DRIVER_CAPABILITIES=utility). The operator needs no GPU.
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# uid 65532 has no passwd entry: gpupin names itself without one (POD_NAME, else uid65532@host)
USER 65532:65532
ENTRYPOINT ["gpupin"]
CMD ["operator"]
