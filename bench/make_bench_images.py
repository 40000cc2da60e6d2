#!/usr/bin/python3
"""Writes a folder of real-sized JPEGs for bench_stream, made from real photographs.

    /usr/bin/python3 bench/make_bench_images.py OUT_DIR --count 512 [--photos DIR] [--seed 0]

Output: OUT_DIR/<class>/<class>_NNNNN.jpg, one class per source photograph, about
CUB-200's size (500 x 375 landscape, or 375 x 500 portrait for one image in four),
JPEG quality 75. Each image is a seeded random scale, crop, flip and small colour
change of one photograph, so files differ and decode like camera JPEGs.

The photographs are scikit-image's sample data as Debian ships it in python3-skimage
(/usr/lib/python3/dist-packages/skimage/data): astronaut, chelsea (a cat), coffee,
motorcycle_left, rocket and hubble_deep_field, all real colour photographs (see
skimage/data/README.txt and the package's copyright file for their sources and
licences). Without installing the package and its dependencies, its data can be
unpacked on its own:
    apt-get download python3-skimage && dpkg-deb -x python3-skimage_*.deb /tmp/sk
    ... --photos /tmp/sk/usr/lib/python3/dist-packages/skimage/data
Needs only Debian's python3-pil. The generated images are never committed.
"""
import argparse
import os
import random
import sys

from PIL import Image, ImageEnhance

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
          "hubble_deep_field.jpg"]
SEARCH = ["/usr/lib/python3/dist-packages/skimage/data",
          "/tmp/skimage-deb/usr/lib/python3/dist-packages/skimage/data"]


def find_photos(folder):
    for d in ([folder] if folder else SEARCH):
        if d and all(os.path.isfile(os.path.join(d, p)) for p in PHOTOS):
            return d
    sys.exit("make_bench_images: the photographs (%s) are not in %s; install python3-skimage "
             "or pass --photos DIR (see this script's docstring)" %
             (", ".join(PHOTOS), folder or " or ".join(SEARCH)))


def variant(photo, rng):
    w, h = (375, 500) if rng.random() < 0.25 else (500, 375)
    # The smallest scale that still covers w x h, times up to 1.6 (zoomed-in crops).
    s = max(w / photo.width, h / photo.height) * rng.uniform(1.0, 1.6)
    big = photo.resize((max(w, round(photo.width * s)), max(h, round(photo.height * s))),
                       Image.BILINEAR)
    x, y = rng.randint(0, big.width - w), rng.randint(0, big.height - h)
    im = big.crop((x, y, x + w, y + h))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2))
    return ImageEnhance.Color(im).enhance(rng.uniform(0.8, 1.2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output image folder (created)")
    ap.add_argument("--count", type=int, default=512, help="number of JPEGs")
    ap.add_argument("--photos", help="folder holding the source photographs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", type=int, default=75, help="JPEG quality")
    a = ap.parse_args()
    src = find_photos(a.photos)
    photos = [Image.open(os.path.join(src, p)).convert("RGB") for p in PHOTOS]
    rng = random.Random(a.seed)
    total = 0
    for i in range(a.count):
        k = i % len(PHOTOS)
        cls = os.path.splitext(PHOTOS[k])[0]
        os.makedirs(os.path.join(a.out, cls), exist_ok=True)
        path = os.path.join(a.out, cls, "%s_%05d.jpg" % (cls, i))
        variant(photos[k], rng).save(path, quality=a.quality)
        total += os.path.getsize(path)
    print("make_bench_images: %d JPEGs (%.1f MB) from %s in %s" %
          (a.count, total / 1e6, src, a.out))


if __name__ == "__main__":
    main()
