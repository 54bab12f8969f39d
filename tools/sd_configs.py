"""Full-size model configs (as published in the official repos' config.json files),
typed in so nothing is fetched from a hub. Used by the benchmark tooling.

SD1.5: runwayml/stable-diffusion-v1-5; SD2.1: stabilityai/stable-diffusion-2-1;
SDXL: stabilityai/stable-diffusion-xl-base-1.0 and stable-diffusion-xl-refiner-1.0
(unet/, vae/, text_encoder/, text_encoder_2/ config.json; the refiner matches sgm's
sd_xl_refiner.yaml: model_channels 384, channel_mult [1, 2, 4, 4], transformer_depth 4,
attention only at levels 1-2, 64-channel heads, context_dim 1280, adm_in_channels 2560).
"""

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD21_UNET = dict(SD15_UNET, sample_size=96, cross_attention_dim=1024,
                 attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
# SDXL base: 2.57B params. attention_head_dim is (as in SD2) the number of 64-channel heads per level.
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True, norm_num_groups=32,
    addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # 6 time ids * 256 + pooled 1280
)
# SDXL refiner: 2.3B params.
SDXL_REFINER_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(384, 768, 1536, 1536),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=4, attention_head_dim=(6, 12, 24, 24),
    cross_attention_dim=1280, use_linear_projection=True, norm_num_groups=32,
    addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560,  # 5 time ids (with aesthetic score) * 256 + pooled 1280
)
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512), norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
SDXL_VAE = dict(VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
              projection_dim=768)
OPENCLIP_H = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                  num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                  projection_dim=512, pad_token_id=1)
# SDXL text_encoder_2 (CLIPTextModelWithProjection): all 32 layers (pooled output uses the last one).
OPENCLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                     num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                     projection_dim=1280, pad_token_id=1)
# family -> (UNet, text encoder, VAE, text encoder 2 or None). SDXL base uses both encoders; the
# refiner only the second (text encoder slot None).
FAMILIES = {"sd15": (SD15_UNET, CLIP_L), "sd21": (SD21_UNET, OPENCLIP_H),
            "sdxl": (SDXL_UNET, CLIP_L), "sdxl_refiner": (SDXL_REFINER_UNET, None)}
TEXT_2 = {"sdxl": OPENCLIP_BIGG, "sdxl_refiner": OPENCLIP_BIGG}
VAES = {"sd15": VAE, "sd21": VAE, "sdxl": SDXL_VAE, "sdxl_refiner": SDXL_VAE}
