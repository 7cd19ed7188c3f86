# wan-mcp over streamable HTTP, for a host or a team: `docker build -t wan-mcp .` then
#   docker run -p 8000:8000 -e WAN_MCP_API_KEY=sk-... -e WAN_MCP_HTTP_TOKEN=<32+ random chars> \
#     -e WAN_MCP_ALLOWED_HOSTS=wan.example.com -v wan-data:/data wan-mcp
# It listens on every interface, so it refuses to start without a bearer token (WAN_MCP_HTTP_TOKEN,
# a tenants file, or OAuth: see README "Hosting for several users"). Runs as an unprivileged user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY wan_mcp ./wan_mcp
RUN pip install ".[postgres]" && rm -rf /src

RUN useradd --system --uid 10001 --create-home --home-dir /home/wan wan \
    && mkdir -p /data /data/videos \
    && chown -R wan:wan /data
USER wan
WORKDIR /home/wan

ENV WAN_MCP_DATA_DIR=/data \
    WAN_MCP_OUTPUT_DIR=/data/videos
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["wan-mcp", "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
