FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY streams streams
COPY agents agents
COPY sinks sinks
COPY outloop outloop
RUN pip install --no-cache-dir .
ENV OUTLOOP_HOME=/data OUTLOOP_HTTP_HOST=0.0.0.0
VOLUME ["/data"]
ENTRYPOINT ["outloop"]
