/**
 * Small dialogs: a multi-line prompt input and a picker used when a command
 * runs from the palette without an explicit target.
 */
import { Dialog, InputDialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

/** Dialog body with a textarea; its value is the prompt. */
class PromptBody extends Widget implements Dialog.IBodyWidget<string> {
  constructor(label: string, initial: string) {
    super({ node: document.createElement('div') });
    this.addClass('llmgw-prompt-dialog');
    const text = document.createElement('label');
    text.textContent = label;
    this._textarea = document.createElement('textarea');
    this._textarea.className = 'jp-mod-styled llmgw-prompt-input';
    this._textarea.dataset.testid = 'llmgw-prompt-input';
    this._textarea.rows = 8;
    this._textarea.value = initial;
    this.node.appendChild(text);
    this.node.appendChild(this._textarea);
  }

  getValue(): string {
    return this._textarea.value;
  }

  protected onAfterAttach(): void {
    this._textarea.focus();
    this._textarea.select();
  }

  private _textarea: HTMLTextAreaElement;
}

/**
 * Ask for a prompt. Resolves with the prompt, or null when cancelled or empty.
 */
export async function askPrompt(options: {
  title: string;
  label: string;
  initial?: string;
  accept: string;
}): Promise<string | null> {
  const body = new PromptBody(options.label, options.initial ?? '');
  const result = await showDialog({
    title: options.title,
    body,
    buttons: [
      Dialog.cancelButton(),
      Dialog.okButton({ label: options.accept })
    ],
    focusNodeSelector: 'textarea'
  });
  if (!result.button.accept) {
    return null;
  }
  const prompt = (result.value ?? '').trim();
  return prompt ? prompt : null;
}

/**
 * Let the user pick one of `items` (label -> value). Resolves with the value
 * or null; with a single item it is taken without asking.
 */
export async function pickItem(
  title: string,
  label: string,
  items: Map<string, string>
): Promise<string | null> {
  if (items.size === 0) {
    return null;
  }
  if (items.size === 1) {
    return [...items.values()][0];
  }
  const result = await InputDialog.getItem({
    title,
    label,
    items: [...items.keys()]
  });
  if (!result.button.accept || result.value === null) {
    return null;
  }
  return items.get(result.value) ?? null;
}
