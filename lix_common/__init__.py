"""Code shared by training (lix_train) and the vehicle (lix_deploy.runtime, ros_node), torch-free.

What belongs here: small rules both sides must apply identically, that import nothing but the
standard library, numpy and OpenCV (never torch, lix_train or lix_deploy), so the runtime can use
them without the training package and training without the deployment one.

cli            one command-line style and the exit-code table of every tool (training and deployment)
interpolation  how camera images are resized (training transforms and the runtime's preprocessing)
"""
