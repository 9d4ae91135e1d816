# Custom Beam SDK container for Dataflow workers: Beam 2.77.0 on Python 3.11 with witcurate and
# its pinned dependencies pre-installed (workers start without installing anything) and CUDA
# torch for the score stage's GPU workers.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/witcurate:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/witcurate:0.1.0
#   witcurate run ... --runner DataflowRunner --sdk_container_image REGION-docker.pkg.dev/PROJECT/REPO/witcurate:0.1.0
#
# The launching machine must run the same Beam (2.77.0) and Python (3.11) as this image.
FROM apache/beam_python3.11_sdk:2.77.0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    PYTHONUNBUFFERED=1

# CUDA torch first (the biggest layer, cached across code changes).
# On Linux x86_64 the PyPI wheels of torch 2.14.1 / torchvision 0.29.1 are the CUDA builds
# (2.14.1+cu130: the CUDA 13.0 runtime, cuDNN and NCCL arrive as nvidia-* wheels); the image
# needs no CUDA toolkit. The GPU driver comes from Dataflow (`install-nvidia-driver` in the
# accelerator option) and CUDA 13 needs a driver >= 580. If your workers' driver is older,
# build with a CUDA 12 wheel from PyTorch's own index, after checking that the pinned version
# is published there (https://download.pytorch.org/whl/torch/):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 ...
# For CPU-only workers https://download.pytorch.org/whl/cpu gives a far smaller image.
# `torch==2.14.1` in pyproject.toml also accepts these local builds (2.14.1+cu126, +cpu), so the
# package install below keeps the torch chosen here.
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1

# The package with its pinned dependencies and the gcp extra (Beam's GCS IO, gcsfs for the
# fsspec paths the workers read and write). A regular install, not editable: the workers
# import witcurate from site-packages, package data included.
COPY pyproject.toml setup.py README.md /opt/witcurate/
COPY witcurate /opt/witcurate/witcurate
RUN pip install "/opt/witcurate[gcp]" \
    && python -c "import witcurate.pipeline.stages as s, apache_beam, torch; [s.get_stage(n) for n in s.ORDER]; assert apache_beam.__version__ == '2.77.0'"

# The image keeps the Beam SDK harness as its entrypoint (/opt/apache/beam/boot) from the base.
