# Ferry's image: the operator (`ferry run`), its admission webhooks and read API, and the `ferry`
# CLI. Non-root, works with a read-only root filesystem (nothing is written outside /tmp), and
# every Python dependency comes from requirements.lock with its hashes.
#
#   docker build -t ferry .                       # or: buildah bud -t ferry .
#   make image                                    # buildah on a locally made Debian base, then a smoke test
#
# BASE_IMAGE: python:3.11-slim-bookworm pinned by digest. The digest was taken from public
# references and could not be verified from the build machines (no registry is reachable there);
# check it (`crane digest` / `docker buildx imagetools inspect`) when bumping. `make image` passes
# a Debian bookworm base with Debian's python3 (also 3.11) made with debootstrap instead.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
RUN python3 -m venv /opt/ferry
COPY requirements.lock /tmp/requirements.lock
# Wheels only: no compiler in the image, and nothing is built from an sdist we did not review.
# The optional build secret "ca" is a CA bundle for reaching PyPI through a TLS-inspecting proxy
# (`--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt`); it is used here and not kept.
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && /opt/ferry/bin/pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/ferry/bin/pip install --no-deps --no-build-isolation --no-index /src \
 && /opt/ferry/bin/python -m compileall -q /opt/ferry/lib \
 && /opt/ferry/bin/ferry --version

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="Validated, versioned, audited configuration for Kubernetes workloads"
RUN groupadd --gid 10001 ferry \
 && useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin ferry
COPY --from=build /opt/ferry /opt/ferry
ENV PATH=/opt/ferry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["ferry"]
CMD ["run"]
