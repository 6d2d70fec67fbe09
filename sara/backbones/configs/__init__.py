"""Architecture configs (diffusers ``config.json`` values) of the public denoisers.

``sd15_unet.json``       stable-diffusion-v1-5/stable-diffusion-v1-5 unet     859,520,964 params
``sd2_unet.json``        stabilityai/stable-diffusion-2 unet                  865,910,724 params
``sd3_transformer.json`` stabilityai/stable-diffusion-3-medium-diffusers      2,028,328,000 params
``sdxl_unet.json``       stabilityai/stable-diffusion-xl-base-1.0 unet        2,567,463,684 params
"""
