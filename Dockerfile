# llmpulse worker image: `docker build -t llmpulse .`; runs `llmpulse worker` on port 6066.
# Two stages so the final image carries wheels' results only, not the build tooling.
FROM python:3.11-slim AS build
WORKDIR /src
# README is optional at this point (the glob lets the build go on without it); LICENSE is pyproject's license-files.
COPY pyproject.toml LICENSE README.md* ./
COPY llmpulse ./llmpulse
COPY schemas ./schemas
COPY producers ./producers
COPY processors ./processors
COPY scripts/llmpulse_build_backend.py ./scripts/
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[processor,simulation,otlp]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LLMPULSE_WEB_PORT=6066
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "llmpulse[processor,simulation,otlp]" \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 llmpulse
USER 10001
WORKDIR /home/llmpulse
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LLMPULSE_WEB_PORT', '6066') + '/health/live', timeout=2)"]
ENTRYPOINT ["llmpulse"]
CMD ["worker"]
