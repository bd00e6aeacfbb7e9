"""ane_build: build, verify and submit Apple Neural Engine ONNX containers."""
