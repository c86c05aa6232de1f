# syntax=docker/dockerfile:1.7
#
# One image for every role: `promanage serve` (api), `promanage worker`, `promanage migrate`.
# Reproducible: pinned toolchain and base images, -trimpath, no VCS stamping, version and
# revision passed in as build arguments (CI passes the tag and the commit SHA), and
# SOURCE_DATE_EPOCH honoured by BuildKit for the image timestamps.
# Runs read-only: the process writes only to PROMANAGE_DATA_DIR and /tmp, which Kubernetes
# mounts as emptyDir volumes (docker: --read-only --tmpfs /tmp -v promanage-data:/var/lib/promanage).

# The API reference's renderer (Redoc) is fetched from npm at a pinned version and verified
# integrity (never kept in git); the build stage embeds it into the binary (/docs works offline).
# This stage only runs `npm pack` and a hash: the renderer's bytes are pinned by the sha512
# integrity in scripts/docs-assets.sh, whatever Node 22 release this is. Pinned by digest like
# every base image (Renovate keeps it current; the digest could not be checked against Docker
# Hub from the build machine, which has no registry access).
FROM --platform=$BUILDPLATFORM node:22-bookworm-slim@sha256:43ac6c60b8f89723f746e8a92ce91abd5017e627ce1ddfe4238355d3a30b772c AS docs
WORKDIR /src
COPY scripts/docs-assets.sh scripts/
RUN bash scripts/docs-assets.sh

# Pinned by digest as well as by tag (Renovate updates both, and the workflow's
# GO_VERSION with them; deploy/validate checks that CI tests with this Go).
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS build
WORKDIR /src
ENV CGO_ENABLED=0 \
    GOFLAGS=-buildvcs=false \
    GOTOOLCHAIN=local

# Dependencies first so the module download layer is cached across source changes.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download -x

COPY . .
COPY --from=docs /src/api/docs/assets/ api/docs/assets/

# Set by BuildKit from --platform (cross-compiled on the build host, no emulation).
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
      -o /out/promanage ./cmd/promanage \
 && mkdir -p /out/data

# distroless/static: no shell, no package manager, CA certificates and tzdata only.
# The :nonroot tag runs as uid/gid 65532; USER below repeats it numerically so that
# Kubernetes' runAsNonRoot can verify it without resolving a user name.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="promanage" \
      org.opencontainers.image.description="ProManage multi-tenant project management: api (serve), worker and migrate" \
      org.opencontainers.image.source="https://github.com/promanage/promanage" \
      org.opencontainers.image.url="https://github.com/promanage/promanage" \
      org.opencontainers.image.documentation="https://github.com/promanage/promanage/tree/main/deploy" \
      org.opencontainers.image.vendor="ProManage" \
      org.opencontainers.image.licenses="Proprietary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

COPY --from=build /out/promanage /usr/local/bin/promanage
COPY --from=build --chown=65532:65532 /out/data /var/lib/promanage

ENV PROMANAGE_HTTP_ADDR=:8080 \
    PROMANAGE_METRICS_ADDR=:9091 \
    PROMANAGE_DATA_DIR=/var/lib/promanage

USER 65532:65532
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/promanage"]
CMD ["serve"]
