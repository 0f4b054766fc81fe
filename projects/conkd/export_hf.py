"""Write a ``--backbone hf`` generator (dialogue teacher or student) as a merged Hugging Face
directory, for use outside ParlAI (issue #25): LoRA adapters and the new token rows merged into
the base weights; the tokenizer with the item tokens, [REC]/[GEN] and the pad token.

    python projects/conkd/export_hf.py -mf data/models/conkd/student_modern --out /tmp/student-hf

Load it back with ``AutoModelForCausalLM.from_pretrained(out)`` / ``AutoTokenizer.from_pretrained(out)``;
a reply is generated after the context and starts with [REC] or [GEN].
"""

import argparse


def export(model_file: str, out: str) -> str:
    from parlai.core.agents import create_agent_from_model_file

    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import (
        export_hf_directory,
    )

    agent = create_agent_from_model_file(
        model_file, {'no_cuda': True, 'interactive_mode': True}
    )
    if agent.opt.get('backbone') != 'hf':
        raise SystemExit(f'{model_file}: not a --backbone hf model (nothing to export)')
    return export_hf_directory(agent.model, agent.dict.hf_tokenizer, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-mf', '--model-file', required=True)
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    print(export(args.model_file, args.out))


if __name__ == '__main__':
    main()
