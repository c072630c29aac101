"""Stateless box maths: TensorFlow and NumPy forms side by side (boxes, coder, anchors,
matching and sampling, NMS, RoI pooling)."""
