"""Procedural driving streets for the synthetic vKITTI2-format dataset.

scene.py holds a street as primitives, street.py lays one out (props.py builds its vehicles and
furniture), camera.py holds the pinhole camera and its drive, raycast.py intersects every
pixel's ray with the primitives, appearance.py turns the hits into RGB for one lighting /
weather variation. Geometry and labels never depend on appearance.
"""
