"""Algorithms: small recipes that pick a kernel, a step plan, a credit assigner and a
loss. The trainer (:mod:`alignflow.sdk.trainer`) runs every one of them with the same
loop; see :mod:`alignflow.sdk.algorithms.base` for the contract."""
