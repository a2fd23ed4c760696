// The seven projections LoRA can target, in the engine's module order, and their PEFT key names.

export const LORA_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

export function isLoraModule(name: string): name is LoraModule {
  return (LORA_MODULES as readonly string[]).includes(name);
}

/** PEFT key of a LoRA tensor, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight */
export function peftKey(layer: number, module: LoraModule, which: 'A' | 'B'): string {
  const group = module === 'gate_proj' || module === 'up_proj' || module === 'down_proj' ? 'mlp' : 'self_attn';
  return `base_model.model.model.layers.${layer}.${group}.${module}.lora_${which}.weight`;
}
