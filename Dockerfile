# One image for every role: relayforge serve --mode ingest|relay|consume (or all).
# It needs PostgreSQL and RabbitMQ (DATABASE__URL, AMQP__URL): the embedded PostgreSQL of the
# quick start is left out.

FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in a layer of their own: it is rebuilt only when they change.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('pgserver')))" > requirements.txt \
    && pip install --no-cache-dir --prefix=/install -c constraints.txt -r requirements.txt
# Then the project itself, compiled (Cython kernels against OpenSSL).
COPY setup.py README.md ./
COPY native native
COPY migrations migrations
COPY relayforge relayforge
RUN PIP_CONSTRAINT=/src/constraints.txt pip install --no-cache-dir --no-deps --prefix=/install .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 relayforge
COPY --from=build /install /usr/local
# The build fails unless the compiled kernels load (never ship the slower Python twins).
RUN relayforge doctor | grep -qx "kernels: native"
USER relayforge
WORKDIR /home/relayforge
ENV SERVER__HOST=0.0.0.0 SERVER__PORT=8080 LOG__JSON=true APP_ENV=production
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SERVER__PORT', '8080'), timeout=2)"]
ENTRYPOINT ["relayforge"]
CMD ["serve", "--mode", "ingest"]
