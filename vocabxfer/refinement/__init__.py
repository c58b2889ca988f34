"""Training the embedding rows after the transfer, for the model's job
(``refine``): its settings and objectives, the passages it reads, the
optimizer, the time or step budget, the CUDA-graph step, the collectives of
a distributed job, and the fidelity measured on held-out passages."""
