/**
 * Status bar item: "Agents: 2 running · 1 queued · 1 needs approval".
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import React from 'react';

import { modelView, statusView } from './format';
import { useSignalValue } from './hooks';
import { GatewayModel } from './model';

/** One clickable piece of the item: `.llmgw-statusbar-<name>`, test id the same. */
function StatusText(props: {
  name: string;
  text: string;
  title: string;
  onClick: () => void;
}): JSX.Element {
  return (
    <span
      className={`llmgw-statusbar-${props.name}`}
      data-testid={`llmgw-statusbar-${props.name}`}
      title={props.title}
      onClick={props.onClick}
    >
      {props.text}
    </span>
  );
}

function StatusItem(props: {
  model: GatewayModel;
  onClick: () => void;
}): JSX.Element {
  const { model, onClick } = props;
  const view = useSignalValue(
    [model.summaryChanged, model.connectionChanged],
    () => statusView(model.summary, model.connection)
  );
  const echo = useSignalValue([model.summaryChanged], () =>
    modelView(model.summary)
  );
  return (
    <>
      <StatusText
        name="text"
        text={view.text}
        title={view.title}
        onClick={onClick}
      />
      {echo.text ? (
        <StatusText
          name="model"
          text={echo.text}
          title={echo.title}
          onClick={onClick}
        />
      ) : null}
    </>
  );
}

/** The status bar widget. Its node carries `.llmgw-statusbar[data-state]`. */
export class GatewayStatusItem extends ReactWidget {
  constructor(
    private _model: GatewayModel,
    private _onClick: () => void
  ) {
    super();
    this.addClass('llmgw-statusbar');
    this.addClass('jp-StatusBar-TextItem');
    this.node.dataset.testid = 'llmgw-statusbar';
    this._sync();
    this._model.summaryChanged.connect(this._sync, this);
    this._model.connectionChanged.connect(this._sync, this);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.summaryChanged.disconnect(this._sync, this);
    this._model.connectionChanged.disconnect(this._sync, this);
    super.dispose();
  }

  render(): JSX.Element {
    return <StatusItem model={this._model} onClick={this._onClick} />;
  }

  private _sync(): void {
    const view = statusView(this._model.summary, this._model.connection);
    this.node.dataset.state = view.state;
  }
}
