"""The mask-detector model: its graph (graph.py; ssd.py, the SSD face detector; caffe.py, the Caffe import), the
fine-tuned weights and their format (weights/, tuned.py), the export to a SavedModel (export.py, with info.py's
model-info file) and its OpenVINO twin (ovexport.py, run by ovmodel.py with nms.py), the TF-Object-Detection-API variant
(tfod.py) and the two runtimes' parity (parity.py). MODEL_CARD.md describes it, EXPERIMENTS.md the trials behind it."""
