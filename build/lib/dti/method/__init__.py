"""The paper's method, backbone-free: the concept's token table and wrapped lookup, the optimizers on the sphere,
the magnitude m*, and the embedding files. Everything here sees a text encoder only through `TextEncoderSlot`."""
