"""LEADER (Liu et al. 2024, arXiv 2402.02803): the LLM teacher LEADER(T) and the distilled student LEADER(S).

The models are registered in ``registry.yaml`` as they land (issue D for the teacher and the LLM recommenders).
"""
