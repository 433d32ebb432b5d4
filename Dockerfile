# pyproxy: the proxy, its admin interface and its tools in one image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir .
COPY config ./config
EXPOSE 6033 6032 6070
ENTRYPOINT ["pyproxy"]
CMD ["--config", "/app/config/pyproxy.docker.yaml"]
