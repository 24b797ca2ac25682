# The image every pod runs: Ray's official Python 3.11 GPU image (CUDA), plus the pinned stack and this project
# (ray[default,train,serve]: the install below adds Serve's pins from constraints.txt).
# Ray's ML images that bundled TensorFlow are no longer published, so TensorFlow is installed here, from
# constraints.txt like everything else. The Ray version of the base image equals the pinned one.
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/srgan
COPY --chown=ray:users constraints.txt setup.py pyproject.toml README.md ./
COPY --chown=ray:users components/ components/
COPY --chown=ray:users jobs/ jobs/
COPY --chown=ray:users configs/ configs/
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import components, tensorflow, keras, apache_beam, tensorflow_transform, ray, ray.serve"

ENV TF_CPP_MIN_LOG_LEVEL=2 \
    SRGAN_CACHE_DIR=/tmp/srgan-cache
