# Multi-stage build of the manager and its scan worker (portcullis-scanner, the one binary that links
# trivy; the manager starts it from beside its own executable): static binaries on a distroless
# nonroot base.
# Build: make docker-build IMG=... (needs a Docker engine).
FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
WORKDIR /workspace
# trivy (in the scanner) needs the jsonv2 experiment.
ENV GOEXPERIMENT=jsonv2 CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY api/ api/
COPY internal/ internal/
RUN GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -ldflags="-s -w" -o manager ./cmd && \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -ldflags="-s -w" -o portcullis-scanner ./cmd/portcullis-scanner

FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager /manager
COPY --from=builder /workspace/portcullis-scanner /portcullis-scanner
USER 65532:65532
ENTRYPOINT ["/manager"]
