"""Helpers of the weather example: plain modules of the user's project, which
reach the workers through lsyncd and are imported there."""
