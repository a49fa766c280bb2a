import type { CommandRegistry } from '@lumino/commands';

/** Command ids of the extension (all in the command palette). */
export namespace CommandIDs {
  export const openPanel = 'llmgw:open-panel';
  export const refresh = 'llmgw:refresh';
  export const cancelJob = 'llmgw:cancel-job';
  export const approve = 'llmgw:approve';
  export const deny = 'llmgw:deny';
  export const fork = 'llmgw:fork-job';
  export const rerun = 'llmgw:rerun-job';
  export const insertMagic = 'llmgw:insert-job-magic';
}

/** Palette category. */
export const PALETTE_CATEGORY = 'LLM Gateway';

/** Run a command, surfacing nothing here: commands report their own errors. */
export function runCommand(
  commands: CommandRegistry,
  id: string,
  args: { [key: string]: string }
): Promise<void> {
  return commands.execute(id, args).then(
    () => undefined,
    () => undefined
  );
}
