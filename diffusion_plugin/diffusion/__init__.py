"""Diffusion math with no fairseq import: schedules, rescaling, samplers, timestep samplers."""
