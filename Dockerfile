FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY streams streams
COPY agents agents
COPY sinks sinks
COPY outloop outloop
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home outloop \
    && mkdir -p /data \
    && chown outloop:outloop /data
# a fresh named volume at /data takes this folder's owner, so the worker can write its database there
ENV OUTLOOP_HOME=/data OUTLOOP_HTTP_HOST=0.0.0.0
VOLUME ["/data"]
USER outloop
ENTRYPOINT ["outloop"]
