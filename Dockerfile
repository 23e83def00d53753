# One image for every role: relayforge serve --mode all|ingest|relay|consume
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY native native
COPY migrations migrations
COPY relayforge relayforge
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 relayforge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER relayforge
WORKDIR /home/relayforge
ENV SERVER__HOST=0.0.0.0 SERVER__PORT=8080 LOG__JSON=true
EXPOSE 8080
ENTRYPOINT ["relayforge"]
CMD ["serve", "--mode", "all"]
