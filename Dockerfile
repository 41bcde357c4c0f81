# bkit: one image for every role (migrate, beat, workers, Flower, metrics); the compose file
# picks the command. Settings and secrets come from the environment at run time (`env_file:
# .env`), never from the image: there is no ENV with a key, password or URL here, and
# .dockerignore keeps .env out of the build context.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 bkit \
    && mkdir -p /var/lib/bkit \
    && chown bkit:bkit /var/lib/bkit

# Dependencies and the package first, so editing a strategy does not reinstall everything.
COPY pyproject.toml README.md ./
COPY bkit ./bkit
COPY workers ./workers
RUN pip install .

# Strategy modules: BKIT_STRATEGIES=examples.my_strategy imports them from /app (the working
# directory is on sys.path). Put your own package next to it and name it in BKIT_STRATEGIES.
COPY examples ./examples

USER bkit
# Not a secret: where beat keeps its schedule (a volume in docker-compose.yaml).
ENV BKIT_HOME=/var/lib/bkit
CMD ["bkit", "--help"]
