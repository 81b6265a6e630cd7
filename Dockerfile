# The image of ray-cluster.yaml: Ray plus s43_ray, so that every pod (the head, where the job's
# driver runs, and the workers, where the tasks run) can import the package and run `s43-ray`.
#
#   docker build -t rg.fr-par.scw.cloud/my-namespace/s43-ray:0.1.0 .
#   docker push rg.fr-par.scw.cloud/my-namespace/s43-ray:0.1.0
#
# The base image's Ray must be `spec.rayVersion` in ray-cluster.yaml, and should be the Ray that
# submits the jobs (`ray --version` where you run `ray job submit`). The job's driver runs in the
# cluster, so the submitting machine's Python version does not matter.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311
FROM ${RAY_IMAGE}

WORKDIR /home/ray/s43_ray
# Only what the package needs: no tests, no venv, no credentials (see .dockerignore).
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users s43_ray ./s43_ray
# The base image's Ray satisfies the `ray[default]` requirement and is kept as it is.
RUN pip install --no-cache-dir . \
 && s43-ray --version \
 && python -c "import ray, s43_ray; print('ray', ray.__version__)"
