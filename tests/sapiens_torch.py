"""A PyTorch transcription of Sapiens' pose network with Sapiens' own state-dict names, for the
parity and import tests (interop extra).

Written from facebookresearch/sapiens' facts rather than copied. The backbone is mmpretrain's
VisionTransformer as the sapiens_pose configs build it (``with_cls_token=False``,
``patch_cfg=dict(padding=2)``, qkv bias, ``final_norm=True``, LayerNorm eps 1e-6, no pre-norm
after the patch embedding so the patch conv has a bias): patch conv k16 s16 p2, plus a
(1, rows·cols, C) position embedding, resized bicubically (align_corners=False) at run time when
the input's grid is not the one it was built for, as mmpretrain's ``resize_pos_embed`` does;
pre-norm blocks (qkv laid out (3, heads, head_dim), exact GELU MLP of ratio 4); final LayerNorm.
The head is mmpose's HeatmapHead with ``use_silu``: ConvTranspose2d(k4, s2, p1, no bias) →
InstanceNorm2d → SiLU, twice, then Conv2d 1×1 → InstanceNorm2d → SiLU, twice, then a 1×1 conv to
K. Module attributes follow Sapiens' names, so ``state_dict()`` has its keys:
``backbone.patch_embed.projection``, ``backbone.layers.{i}.{ln1,attn.qkv,attn.proj,ln2}``,
``backbone.layers.{i}.ffn.layers.0.0`` (fc1), ``.ffn.layers.1`` (fc2), ``backbone.ln1`` (final
norm), ``head.deconv_layers.{0,3}``, ``head.conv_layers.{0,3}``, ``head.final_layer``. The
network takes normalised NCHW pixels and returns (N, K, 4·rows, 4·cols) heatmaps, as Sapiens'
TorchScript and torch.export files do.
"""


def patch_grid(image_size, patch=16, padding=2):
  return tuple((s + 2 * padding - patch) // patch + 1 for s in image_size)


def sapiens(torch, *, width, depth, heads, channels, keypoints, image_size):
  """Sapiens' pose network in torch (eval mode) for inputs of ``image_size`` (H, W): its
  position embedding holds that grid."""
  nn, F = torch.nn, torch.nn.functional
  rows, cols = patch_grid(image_size)

  class Attention(nn.Module):
    def __init__(self):
      super().__init__()
      self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x):
      b, n, c = x.shape
      qkv = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
      y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
      return self.proj(y.transpose(1, 2).reshape(b, n, c))

  class FFN(nn.Module):
    def __init__(self):
      super().__init__()
      self.layers = nn.Sequential(nn.Sequential(nn.Linear(width, 4 * width), nn.GELU()),
                                  nn.Linear(4 * width, width))

    def forward(self, x):
      return self.layers(x)

  class Layer(nn.Module):
    def __init__(self):
      super().__init__()
      self.ln1, self.ln2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
      self.attn, self.ffn = Attention(), FFN()

    def forward(self, x):
      x = x + self.attn(self.ln1(x))
      return x + self.ffn(self.ln2(x))

  class PatchEmbed(nn.Module):
    def __init__(self):
      super().__init__()
      self.projection = nn.Conv2d(3, width, 16, stride=16, padding=2)

    def forward(self, x):
      return self.projection(x)

  class Backbone(nn.Module):
    def __init__(self):
      super().__init__()
      self.patch_embed = PatchEmbed()
      self.pos_embed = nn.Parameter(torch.zeros(1, rows * cols, width))
      self.layers = nn.ModuleList([Layer() for _ in range(depth)])
      self.ln1 = nn.LayerNorm(width, eps=1e-6)

    def forward(self, images):
      x = self.patch_embed(images)
      n, c, h, w = x.shape
      pos = self.pos_embed
      if (h, w) != (rows, cols):
        grid = pos.reshape(1, rows, cols, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode='bicubic', align_corners=False)
        pos = grid.flatten(2).transpose(1, 2)
      x = x.flatten(2).transpose(1, 2) + pos
      for layer in self.layers:
        x = layer(x)
      return self.ln1(x).transpose(1, 2).reshape(n, c, h, w)

  class Head(nn.Module):
    def __init__(self):
      super().__init__()
      deconvs, convs = [], []
      for i in range(2):
        deconvs += [nn.ConvTranspose2d(width if i == 0 else channels, channels, 4, stride=2,
                                       padding=1, output_padding=0, bias=False),
                    nn.InstanceNorm2d(channels), nn.SiLU()]
        convs += [nn.Conv2d(channels, channels, 1), nn.InstanceNorm2d(channels), nn.SiLU()]
      self.deconv_layers = nn.Sequential(*deconvs)
      self.conv_layers = nn.Sequential(*convs)
      self.final_layer = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x):
      return self.final_layer(self.conv_layers(self.deconv_layers(x)))

  class PoseEstimator(nn.Module):
    def __init__(self):
      super().__init__()
      self.backbone, self.head = Backbone(), Head()

    def forward(self, images):
      return self.head(self.backbone(images))

  return PoseEstimator().eval()


def randomize(torch, module, seed):
  """Every tensor of ``module`` redrawn, so that parity compares outputs of a realistic
  magnitude: weights ~ N(0, 1/fan_in), LayerNorm scales ~ 1 + N(0, .2²), biases and the position
  embedding ~ N(0, .2²)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in module.state_dict().items():
      noise = torch.randn(t.shape, generator=gen)
      if name.endswith('pos_embed') or name.endswith('bias'):
        t.copy_(0.2 * noise)
      elif t.ndim == 1:
        t.copy_(1 + 0.2 * noise)
      else:
        # ConvTranspose2d's weights are (in, out, kh, kw): an output sums in·kh·kw/4 taps.
        fan_in = t.shape[0] * 4 if '.deconv_layers.' in name else t[0].numel()
        t.copy_(noise / fan_in ** 0.5)
  return module


def heatmaps(torch, network, pixels):
  """``network``'s heatmaps of NHWC float32 ``pixels``, NHWC like ours."""
  with torch.no_grad():
    out = network(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
  return out.numpy().transpose(0, 2, 3, 1)
