"""Training diffstack's models from scratch: a resumable loop and objectives generic over the interfaces.

    loop.train(objective, config, out)   AdamW + warm-up/cosine LR + optional EMA, checkpoints, logging
    autoencoder.KLAutoencoderObjective   reconstruction + β·KL for a KL autoencoder (VAE-KL layout)
    contrastive.ContrastiveObjective     CLIP-style InfoNCE: any TextConditioner + a small image tower
    diffusion.DiffusionObjective         ε-prediction on cached scaled latents, caption dropout for CFG
    distributed                          data-parallel under torchrun: process group, Shard (a process's rows)
    evaluate                             attribute accuracy of generated images, labelled image grids
    recipe_file.load_recipe(path)        a model's recipe.yaml (plugins, sizes, data set, training settings), validated
    stages                               the four stages (vae, decoder, clip, unet); `RUNNERS` by name

The `diffstack train` and `diffstack eval` commands (core.cli.train, core.cli.eval) drive them.
"""
