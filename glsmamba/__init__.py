"""GLSMamba: global-local state space models for video-based human pose estimation."""

__version__ = "0.1.0"
